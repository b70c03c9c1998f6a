"""Stage 2 of MaskAQ: quantization-aware training helpers (augmentation, losses, steps)."""
from .losses import classification_qat_loss, mssim_from_records
from .loop import run_classification_qat
from .qat_augment import QATAugment
from .step import RefreshSchedule, build_qat_optimizer, qat_train_step

__all__ = [
    'QATAugment', 'classification_qat_loss', 'mssim_from_records', 'RefreshSchedule',
    'build_qat_optimizer', 'qat_train_step', 'run_classification_qat'
]
