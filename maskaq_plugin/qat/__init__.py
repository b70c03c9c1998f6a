"""Stage 2 of MaskAQ: quantization-aware training helpers (augmentation, losses, steps)."""
from .distiller import (QATDistiller, apply_flat_overrides, distill_losses_for, flat_view,
                        mssim_from_records)
from .losses import classification_qat_loss, classification_terms, report_terms
from .loop import run_classification_qat
from .nonfinite import NonFiniteGuard, NonFiniteLossError
from .qat_augment import QATAugment
from .step import RefreshSchedule, build_qat_optimizer, qat_train_step

__all__ = [
    'QATAugment', 'QATDistiller', 'apply_flat_overrides', 'distill_losses_for', 'flat_view',
    'classification_qat_loss', 'classification_terms', 'report_terms', 'mssim_from_records',
    'NonFiniteGuard', 'NonFiniteLossError', 'RefreshSchedule', 'build_qat_optimizer',
    'qat_train_step', 'run_classification_qat'
]
