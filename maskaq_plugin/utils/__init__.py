"""Utilities: weights-only loading of MMEngine checkpoints, config handling for tools/."""
from .launch import load_config, setup_launcher
from .safe_load import history_buffer_getattr, register_safe_globals, safe_globals

register_safe_globals()

__all__ = [
    'history_buffer_getattr', 'load_config', 'register_safe_globals', 'safe_globals',
    'setup_launcher'
]
