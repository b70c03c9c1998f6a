"""Load MMEngine checkpoints under torch's ``weights_only=True`` default, without pickles.

Since torch 2.6 ``torch.load`` only unpickles tensors, containers and allow-listed globals.
MMEngine 0.10.7 calls ``torch.load(filename, map_location=...)`` (so the default applies)
and its checkpoints hold a few other objects, found by training a real ``Runner`` and
listing them with ``torch.serialization.get_unsafe_globals_in_checkpoint``:

- ``message_hub.log_scalars``: ``mmengine.logging.HistoryBuffer`` objects whose
  ``_log_history`` / ``_count_history`` are numpy arrays (``numpy._core.multiarray._reconstruct``,
  ``numpy.ndarray``, ``numpy.dtype`` and its concrete class such as ``Float64DType``), and
  whose ``statistics_methods`` dict holds ``HistoryBuffer.min`` / ``max`` / ``current`` /
  ``mean``, pickled as ``builtins.getattr(HistoryBuffer, 'min')``;
- ``message_hub.runtime_info`` and metrics: numpy scalars (``numpy._core.multiarray.scalar``).

Everything else (``collections.OrderedDict``, tensors, optimizer and scheduler states) is
allowed by torch already. :func:`register_safe_globals` allow-lists exactly these types;
``builtins.getattr`` is NOT allowed: the name is mapped to :func:`history_buffer_getattr`,
which resolves only the four statistics methods and refuses anything else, so a crafted
checkpoint cannot reach ``os.system`` through attribute chains. Object arrays stay
refused (``numpy.dtypes.ObjectDType`` is not listed). ``weights_only=False`` is never used.

Importing :mod:`maskaq_plugin` registers the list, so ``tools/train.py --resume``,
``load_from`` and ``teacher_checkpoint`` all load through torch's restricted unpickler.
"""
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

# The methods MMEngine's HistoryBuffer registers by default (HistoryBuffer._set_default_statistics).
HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')
# Numeric dtypes only: an ``object`` array would carry arbitrary Python objects.
NUMPY_DTYPES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32',
                'uint64', 'float16', 'float32', 'float64')


def history_buffer_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` while unpickling a checkpoint.

    Resolves ``getattr(HistoryBuffer, m)`` for ``m`` in :data:`HISTORY_BUFFER_METHODS`,
    the only use of ``getattr`` in MMEngine checkpoints, and refuses everything else.

    Examples:
        >>> history_buffer_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
        True
    """
    if obj is HistoryBuffer and name in HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refused getattr({obj!r}, {name!r}) while loading a checkpoint: only '
        f'HistoryBuffer.{{{",".join(HISTORY_BUFFER_METHODS)}}} are allowed '
        '(maskaq_plugin.utils.safe_load). If you trust this file, convert it with plain '
        'torch.load outside the plugin and save its state_dict.')


def safe_globals():
    """The allow-list: ``list`` of callables and ``(callable, 'module.name')`` pairs.

    ``(f, name)`` pairs bind a pickled global name to ``f``: numpy 1.x checkpoints name the
    array helpers ``numpy.core.multiarray.*``, numpy 2.x ``numpy._core.multiarray.*``.
    """
    multiarray = np._core.multiarray
    entries = [
        HistoryBuffer,
        (history_buffer_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
        multiarray._reconstruct,
        multiarray.scalar,
        (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (multiarray.scalar, 'numpy.core.multiarray.scalar'),
    ]
    entries += [type(np.dtype(name)) for name in NUMPY_DTYPES]
    return entries


def register_safe_globals():
    """Add :func:`safe_globals` to torch's weights-only allow-list (idempotent).

    Examples:
        >>> register_safe_globals()
        >>> HistoryBuffer in torch.serialization.get_safe_globals()
        True
    """
    torch.serialization.add_safe_globals(safe_globals())
