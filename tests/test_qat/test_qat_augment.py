"""Batched QAT augmentations: ranges, probabilities, seeding, agreement with torchvision."""
import pytest
import torch
import torchvision.transforms.functional as TF

from maskaq_plugin.qat.qat_augment import QATAugment, _hsv_to_rgb, _rgb_to_hsv

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def normalise(img):
    return (img - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def denormalise(x):
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def test_seeded_shape_and_pixel_range():
    x = normalise(torch.rand(8, 3, 32, 32))
    aug = QATAugment(MEAN, STD)
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    c = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, c)
    img = denormalise(a)
    assert img.min() >= -1e-5 and img.max() <= 1 + 1e-5


def test_full_crop_is_identity_or_flip():
    x = normalise(torch.rand(64, 3, 16, 16))
    aug = QATAugment(MEAN, STD, scale=(1, 1), ratio=(1, 1), jitter_p=0, gray_p=0,
                     blur_frac=0)
    out = aug(x, torch.Generator().manual_seed(0))
    same = (out - x).flatten(1).abs().amax(1) < 1e-4
    flipped = (out - x.flip(-1)).flatten(1).abs().amax(1) < 1e-4
    assert (same | flipped).all()
    assert 16 < flipped.sum() < 48  # p = 0.5


def test_crop_enlarges_a_sub_window():
    # a horizontal ramp: every crop keeps a monotone ramp, steeper than the input
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(16, 3, 32, 32)
    aug = QATAugment(MEAN, STD, scale=(0.25, 0.5), jitter_p=0, gray_p=0, blur_frac=0)
    out = denormalise(aug(normalise(ramp), torch.Generator().manual_seed(0)))
    span = (out[..., -1] - out[..., 0]).abs().mean((1, 2))  # (B,)
    assert (span < 0.9).all()  # a strict sub-window of [0, 1]


def test_grayscale_and_jitter_probabilities():
    x = normalise(torch.rand(1000, 3, 4, 4) * 0.5 + torch.tensor([0.5, 0.0, 0.25]).view(
        1, 3, 1, 1))
    gray_only = QATAugment(MEAN, STD, scale=(1, 1), ratio=(1, 1), jitter_p=0, blur_frac=0)
    img = denormalise(gray_only(x, torch.Generator().manual_seed(0)))
    is_gray = (img.amax(1) - img.amin(1)).flatten(1).amax(1) < 1e-5
    assert is_gray.float().mean().item() == pytest.approx(0.2, abs=0.04)
    jitter_only = QATAugment(MEAN, STD, scale=(1, 1), ratio=(1, 1), gray_p=0, blur_frac=0)
    img = denormalise(jitter_only(x, torch.Generator().manual_seed(0)))
    src = denormalise(x)
    changed = ((img - src).abs().flatten(1).amax(1) > 1e-4) & \
        ((img - src.flip(-1)).abs().flatten(1).amax(1) > 1e-4)
    assert changed.float().mean().item() == pytest.approx(0.8, abs=0.04)


def test_blur_matches_torchvision_with_kernel_of_10_percent():
    aug = QATAugment(MEAN, STD)
    img = torch.rand(2, 3, 64, 64)
    sigma = torch.rand(2, generator=torch.Generator().manual_seed(0)) * 1.9 + 0.1
    out = aug.blur(img, torch.Generator().manual_seed(0))
    ref = torch.stack([TF.gaussian_blur(img[i], [7, 7], [sigma[i].item()] * 2)
                       for i in range(2)])  # int(6.4) = 6 -> odd 7
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_hsv_round_trip_and_hue_shift_match_torchvision():
    img = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(_hsv_to_rgb(_rgb_to_hsv(img)), img, atol=1e-5, rtol=0)
    hsv = _rgb_to_hsv(img)
    shifted = torch.cat([torch.remainder(hsv[:, :1] + 0.13, 1.0), hsv[:, 1:]], 1)
    torch.testing.assert_close(_hsv_to_rgb(shifted), TF.adjust_hue(img, 0.13), atol=1e-5,
                               rtol=0)
