"""Stage 1 augmentation: roll range, σ_t schedule, colour-jitter ranges."""
import math

import pytest
import torch

from maskaq_plugin.synthesis.augment import schedule, synthesis_augment


def test_schedule_jitter_and_sigma():
    assert schedule(0, 100) == (8, 0.5)
    assert schedule(49, 100)[0] == 8 and schedule(50, 100)[0] == 16
    assert schedule(99, 100) == (16, 0.0)
    assert schedule(25, 51)[1] == pytest.approx(0.25)
    with pytest.raises(ValueError, match='outside'):
        schedule(100, 100)


@pytest.mark.parametrize('it,bound', [(0, 8), (99, 16)])
def test_roll_offsets_cover_and_respect_range(it, bound):
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 1, 40, 40)
    shifts = [synthesis_augment(x, it, 100, generator=gen, return_params=True)[1].shift
              for _ in range(400)]
    values = torch.tensor(shifts)
    assert values.abs().max() == bound  # reached, never exceeded
    assert set(values.flatten().tolist()) == set(range(-bound, bound + 1))


def test_output_is_roll_plus_offset_then_affine_jitter():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 16, 16)
    out, p = synthesis_augment(x, 10, 100, generator=gen, return_params=True)
    ref = (torch.roll(x, p.shift, dims=(2, 3)) + p.offset - p.m) / p.s
    torch.testing.assert_close(out, ref)
    assert p.offset.shape == p.m.shape == p.s.shape == (3, 3, 1, 1)


def test_per_image_channel_statistics():
    gen = torch.Generator().manual_seed(2)
    x = torch.zeros(4000, 3, 2, 2)
    it, iters = 25, 101  # σ_t = 0.5 · (1 - 25/100) = 0.375
    _, p = synthesis_augment(x, it, iters, generator=gen, return_params=True)
    assert p.offset.std().item() == pytest.approx(0.375, rel=0.05)
    assert p.offset.mean().abs().item() < 0.02
    assert -1 <= p.m.min() and p.m.max() <= 1 and p.m.std().item() == pytest.approx(
        1 / math.sqrt(3), rel=0.05)
    log_s = p.s.log()
    assert -1 <= log_s.min() and log_s.max() <= 1 and log_s.mean().abs().item() < 0.03
    # independent per image and channel
    assert p.m.flatten().unique().numel() > 0.99 * p.m.numel()
    _, last = synthesis_augment(x, iters - 1, iters, generator=gen, return_params=True)
    assert torch.count_nonzero(last.offset) == 0  # σ_T = 0


def test_gradient_reaches_images():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    synthesis_augment(x, 0, 10, generator=torch.Generator().manual_seed(0)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
