"""Utilities: weights-only loading of MMEngine checkpoints, checkpoint file checks, config
handling for tools/."""
from .checkpoint_file import CheckpointFileError, check_checkpoint_file, explain_load_error
from .launch import check_checkpoints, load_config, setup_launcher
from .log_scalars import last_logged_metrics
from .safe_load import history_buffer_getattr, register_safe_globals, safe_globals

register_safe_globals()

__all__ = [
    'CheckpointFileError', 'check_checkpoint_file', 'check_checkpoints', 'explain_load_error',
    'history_buffer_getattr', 'last_logged_metrics', 'load_config', 'register_safe_globals',
    'safe_globals', 'setup_launcher'
]
