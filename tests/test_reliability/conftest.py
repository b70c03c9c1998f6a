"""Fixtures of the reliability tests."""
import importlib.util
import os.path as osp

import pytest
from run_helpers import ROOT


@pytest.fixture(scope='session')
def scenes(tmp_path_factory):
    """4 generated validation scenes (COCO annotations), 128 px."""
    root = str(tmp_path_factory.mktemp('scenes'))
    spec = importlib.util.spec_from_file_location(
        'make_digit_scenes', osp.join(ROOT, 'tools', 'make_digit_scenes.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.generate(root, num_train=1, num_val=4, size=128, seed=0, progress=False)
    return root
