"""Explicit forwards for the supported attention families (registered on import).

Each family is registered only when its library imports, so the plugin works with any
subset of timm / mmdet / mmseg / mmpretrain installed.
"""
from . import mm_window_msa, mmpretrain_mha, timm_attention, torch_mha  # noqa: F401
