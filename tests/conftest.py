"""Suite-wide fixtures."""
import os

# NNCF gives its CPU extension 60 s to load (build or up-to-date check) in each process;
# on a busy 2-core machine that check alone has taken longer (a test that calls
# nncf.quantize directly failed with TimeoutError while other jobs ran). The library lifts
# the limit in quantize_model (maskaq_plugin/quant/extension.py); the tests that call NNCF
# directly get the same here. Set before nncf reads it; a user's value wins.
os.environ.setdefault('NNCF_EXTENSION_LOAD_TIMEOUT', '0')

import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_default_scope():
    """Forget MMEngine's DefaultScope instances after each test.

    A Runner without an experiment name names its DefaultScope by the current second, and
    ``DefaultScope.get_instance`` returns an existing instance of that name unchanged: a
    mmseg Runner built in the same second as an earlier mmdet one would then resolve
    ``BaseSegDataset`` in the mmdet scope (seen as ``unexpected keyword argument
    'reduce_zero_label'``, and a crash later in the run).
    """
    yield
    DefaultScope._instance_dict.clear()


@pytest.fixture(autouse=True)
def _one_thread():
    """Run each test on one torch thread.

    The tests use tiny models, which gain nothing from intra-op threads; on a busy 2-core
    machine OpenMP threads only spin against each other (measured 2x slower).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
