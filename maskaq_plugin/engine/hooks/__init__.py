"""Runner hooks (registered in MMEngine's root ``HOOKS``)."""
from .data_calibration_hook import DataCalibrationHook
from .export_hook import MaskAQExportHook
from .sample_refresh_hook import SampleRefreshHook

__all__ = ['DataCalibrationHook', 'MaskAQExportHook', 'SampleRefreshHook']
