"""Digit scenes generated once per session into a temporary directory (6 train / 4 val)."""
import pytest
from tools_loader import load_tool

from maskaq_plugin.datasets import digit_scenes as scenes_lib


@pytest.fixture(scope='session')
def scenes_module():
    """The generator, :mod:`maskaq_plugin.datasets.digit_scenes`."""
    return scenes_lib


@pytest.fixture(scope='session')
def train_tool():
    return load_tool('train_fp_models')


@pytest.fixture(scope='session')
def digit_scenes(scenes_module, tmp_path_factory):
    """Root of a 6-train / 4-val digit-scene set (fails with the apt command if no digits)."""
    root = tmp_path_factory.mktemp('digit_scenes')
    scenes_module.generate(str(root), num_train=6, num_val=4, size=128, seed=0, progress=False)
    return str(root)
