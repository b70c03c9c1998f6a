"""L_tv: total variation of the synthetic images."""
import math

import pytest
import torch

from maskaq_plugin.losses.functional import total_variation


def test_hand_computed_2x2():
    # x = [[0, 1], [2, 3]]: horizontal (-1, -1) -> √2, vertical (-2, -2) -> 2√2,
    # anti-diagonal 2 - 1 = 1, diagonal 0 - 3 = -3 -> (1 + 3)/√2; total 5√2.
    x = torch.tensor([[[[0., 1.], [2., 3.]]]], dtype=torch.float64)
    assert total_variation(x).item() == pytest.approx(5 * math.sqrt(2))


def test_matches_naive_loop():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    sums = [0.0, 0.0, 0.0, 0.0]  # squared differences: horizontal, vertical, anti, diag
    for b, c in ((b, c) for b in range(2) for c in range(3)):
        for i in range(4):
            for j in range(5):
                if j + 1 < 5:
                    sums[0] += (x[b, c, i, j] - x[b, c, i, j + 1]).item()**2
                if i + 1 < 4:
                    sums[1] += (x[b, c, i, j] - x[b, c, i + 1, j]).item()**2
                if i + 1 < 4 and j + 1 < 5:
                    sums[2] += (x[b, c, i + 1, j] - x[b, c, i, j + 1]).item()**2
                    sums[3] += (x[b, c, i, j] - x[b, c, i + 1, j + 1]).item()**2
    expected = (math.sqrt(sums[0]) + math.sqrt(sums[1]) +
                (math.sqrt(sums[2]) + math.sqrt(sums[3])) / math.sqrt(2))
    assert total_variation(x).item() == pytest.approx(expected)


def test_constant_image_and_gradient():
    assert total_variation(torch.full((1, 3, 4, 4), 0.7)).item() == 0.0
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    total_variation(x).backward()
    assert x.grad.abs().sum() > 0


def test_wrong_rank_raises():
    with pytest.raises(ValueError, match=r'got shape \(3, 4, 4\)'):
        total_variation(torch.randn(3, 4, 4))
