"""Fixtures of the reliability tests."""
import pytest

from maskaq_plugin.datasets import digit_scenes


@pytest.fixture(scope='session')
def scenes(tmp_path_factory):
    """4 generated validation scenes (COCO annotations), 128 px."""
    root = str(tmp_path_factory.mktemp('scenes'))
    digit_scenes.generate(root, num_train=1, num_val=4, size=128, seed=0, progress=False)
    return root
