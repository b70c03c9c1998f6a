"""The MaskAQ OpenMMLab model wrapper (registered in MMEngine's root ``MODELS``)."""
from .maskaq_algorithm import MaskAQAlgorithm, NonFiniteLossError

__all__ = ['MaskAQAlgorithm', 'NonFiniteLossError']
