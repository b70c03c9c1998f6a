"""benchmarks/kd_vs_classes.py: T²·KL of a noisy student is σ²(1 − 1/C)/2, whatever C."""
import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
from benchmarks.kd_vs_classes import kd_term  # noqa: E402


@pytest.mark.parametrize('num_classes', [10, 100, 1000])
@pytest.mark.parametrize('sigma', [0.3, 1.0])
def test_kd_term_follows_the_logit_error_not_the_class_count(num_classes, sigma):
    expected = sigma ** 2 * (1 - 1 / num_classes) / 2
    assert kd_term(num_classes, logit_std=1.0, noise_std=sigma) == pytest.approx(
        expected, rel=0.05)


def test_kd_term_is_zero_without_error_and_grows_with_it():
    assert kd_term(100, 1.0, 0.0) == pytest.approx(0.0, abs=1e-6)
    assert kd_term(100, 1.0, 0.5) < kd_term(100, 1.0, 1.0) < kd_term(100, 1.0, 2.0)
