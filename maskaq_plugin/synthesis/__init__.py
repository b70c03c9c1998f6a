"""Stage 1 of MaskAQ: synthetic images from the full-precision model (and the student)."""
from .augment import synthesis_augment
from .priors import ClassificationPrior, TaskPrior
from .synthesizer import DEFAULT_LOSS_WEIGHTS, METHOD_TERMS, SynthesisResult, Synthesizer

__all__ = [
    'Synthesizer', 'SynthesisResult', 'TaskPrior', 'ClassificationPrior',
    'synthesis_augment', 'DEFAULT_LOSS_WEIGHTS', 'METHOD_TERMS'
]
