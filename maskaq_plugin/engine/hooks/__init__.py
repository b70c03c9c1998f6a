"""Runner hooks (registered in MMEngine's root ``HOOKS``)."""
from .export_hook import MaskAQExportHook
from .sample_refresh_hook import SampleRefreshHook

__all__ = ['MaskAQExportHook', 'SampleRefreshHook']
