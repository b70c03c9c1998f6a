"""Utilities: weights-only loading of MMEngine checkpoints, checkpoint file checks, config,
device handling for tools/, and seed derivation."""
from .checkpoint_file import CheckpointFileError, check_checkpoint_file, explain_load_error
from .device import (add_device_argument, default_device, device_or_exit,
                     resolve_device, use_runner_device)
from .launch import check_checkpoints, load_config, setup_launcher
from .log_scalars import last_logged_metrics
from .safe_load import history_buffer_getattr, register_safe_globals, safe_globals
from .seeding import derive_seed, derive_words

register_safe_globals()

__all__ = [
    'CheckpointFileError', 'add_device_argument', 'check_checkpoint_file', 'check_checkpoints',
    'default_device', 'derive_seed', 'derive_words', 'device_or_exit', 'explain_load_error', 'history_buffer_getattr',
    'last_logged_metrics', 'load_config', 'register_safe_globals', 'resolve_device',
    'safe_globals', 'setup_launcher', 'use_runner_device'
]
