"""NNCF's C++ CPU fake-quantization kernels: load them once, or fall back to torch ops.

NNCF compiles its CPU extension on first use and gives up after
``NNCF_EXTENSION_LOAD_TIMEOUT`` seconds (60 by default). The first build took ~80 s on
one of this project's machines and 24 s on another, so a cold first quantization could
fail with ``ExtensionLoaderTimeoutException``. ``tools/setup_env.sh`` prebuilds it; when
that did not happen, :func:`ensure_cpu_extension` builds it without the timeout (unless
the user set the variable) and, when loading fails for any reason, switches NNCF to its
pure-torch reference kernels (same results, slower) instead of failing the run.
"""
import logging
import os
from contextlib import contextmanager

from nncf.torch.extensions import EXTENSION_LOAD_TIMEOUT_ENV_VAR
from nncf.torch.quantization.extensions import QuantizedFunctionsCPU
from nncf.torch.quantization.reference import ReferenceQuantizedFunctions

logger = logging.getLogger(__name__)


@contextmanager
def _no_timeout_unless_set():
    user_value = os.environ.get(EXTENSION_LOAD_TIMEOUT_ENV_VAR)
    if user_value is None:
        os.environ[EXTENSION_LOAD_TIMEOUT_ENV_VAR] = '0'
    try:
        yield
    finally:
        if user_value is None:
            os.environ.pop(EXTENSION_LOAD_TIMEOUT_ENV_VAR, None)


def _ensure_loaded(namespace) -> str:
    """Load ``namespace`` (an NNCF ``ExtensionNamespace``); fall back on any failure."""
    if namespace._loaded_namespace is None:
        try:
            with _no_timeout_unless_set():
                namespace.get('Quantize_forward')
        except Exception as err:  # timeout, missing compiler, stale build ...
            logger.warning('NNCF CPU extension unavailable (%s: %s); using its pure-torch '
                           'reference kernels (same results, slower).',
                           type(err).__name__, str(err).splitlines()[0] if str(err) else '')
            namespace._loaded_namespace = ReferenceQuantizedFunctions
    return 'reference' if namespace._loaded_namespace is ReferenceQuantizedFunctions \
        else 'compiled'


def ensure_cpu_extension() -> str:
    """Make NNCF's CPU quantization kernels usable before the first fake-quant call.

    Returns:
        str: ``'compiled'`` (the C++ extension is loaded) or ``'reference'`` (NNCF's
        torch-native kernels are used because the extension could not be built or
        loaded; NNCF's own loader also falls back this way when compilation fails).
    """
    return _ensure_loaded(QuantizedFunctionsCPU)
