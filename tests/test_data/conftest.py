"""Digit scenes generated once per session into a temporary directory (6 train / 4 val)."""
import importlib.util
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_tool(name):
    """Import ``tools/<name>.py`` (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, 'tools', name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def scenes_tool():
    return load_tool('make_digit_scenes')


@pytest.fixture(scope='session')
def train_tool():
    return load_tool('train_fp_models')


@pytest.fixture(scope='session')
def digit_scenes(scenes_tool, tmp_path_factory):
    """Root of a 6-train / 4-val digit-scene set (fails with the apt command if no digits)."""
    root = tmp_path_factory.mktemp('digit_scenes')
    scenes_tool.generate(str(root), num_train=6, num_val=4, size=128, seed=0, progress=False)
    return str(root)
