"""Suite-wide fixtures."""
import pytest
import torch
from mmengine.registry import DefaultScope


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
