"""Fixtures of the quantization tests: a tiny ViT and a batch of images."""
import pytest
from quant_models import images, tiny_vit


@pytest.fixture(scope='module')
def vit():
    return tiny_vit()


@pytest.fixture(scope='module')
def x():
    return images()
