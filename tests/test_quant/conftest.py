"""Fixtures of the quantization tests: one thread, a tiny ViT and a batch of images."""
import pytest
import torch
from quant_models import images, tiny_vit


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny models: intra-op threads only add contention on a loaded 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def vit():
    return tiny_vit()


@pytest.fixture(scope='module')
def x():
    return images()
