"""maskaq-plugin: data-free MaskAQ quantization of ViT backbones for OpenMMLab, on NNCF.

Importing the package registers every component (losses, model wrapper, dataset, hooks)
in MMEngine's root registries, so mmdet, mmseg and mmpretrain configs find them through
``custom_imports = dict(imports=['maskaq_plugin'], allow_failed_imports=False)``.
"""
from . import (attention, datasets, engine, losses, models, qat, quant, synthesis,  # noqa: F401
               tasks, utils)
from .version import __version__  # noqa: F401


def __getattr__(name):
    # The API pulls in NNCF; import it on first use so ``import maskaq_plugin`` stays light.
    if name == 'quantize_data_free':
        from .api import quantize_data_free
        return quantize_data_free
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['quantize_data_free', '__version__']
