"""Logit KD, pixel-wise KD and normalised feature MSE."""
import pytest
import torch
import torch.nn.functional as F

from maskaq_plugin.losses.functional import feature_mse_loss, kd_kl_loss, pixel_kl_loss


def test_kd_zero_for_equal_logits_positive_otherwise():
    torch.manual_seed(0)
    z = torch.randn(4, 10)
    assert kd_kl_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_kl_loss(z, torch.randn(4, 10)).item() > 0


def test_kd_hand_computed_two_classes():
    # T = 1: p = softmax([0, 0]) = [1/2, 1/2], q = softmax([0, ln 3]) = [1/4, 3/4];
    # KL = 1/2·ln(2) + 1/2·ln(2/3) = 1/2·ln(4/3).
    z_fp = torch.tensor([[0., 0.]], dtype=torch.float64)
    z_q = torch.tensor([[0., torch.log(torch.tensor(3.)).item()]], dtype=torch.float64)
    loss = kd_kl_loss(z_fp, z_q, temperature=1.0)
    assert loss.item() == pytest.approx(0.5 * torch.log(torch.tensor(4 / 3)).item())


def test_kd_matches_explicit_formula_with_temperature():
    torch.manual_seed(1)
    z_fp, z_q = torch.randn(3, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    p, q = F.softmax(z_fp / 5, dim=1), F.softmax(z_q / 5, dim=1)
    expected = 25 * (p * (p / q).log()).sum() / 3  # T² · batchmean
    torch.testing.assert_close(kd_kl_loss(z_fp, z_q), expected)


def test_kd_gradient_reaches_student_only_and_checks_shape():
    z_fp = torch.randn(2, 5, requires_grad=True)
    z_q = torch.randn(2, 5, requires_grad=True)
    kd_kl_loss(z_fp, z_q).backward()
    assert z_fp.grad is None and z_q.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='pixel_kl_loss'):
        kd_kl_loss(torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3))


def test_pixel_kl_matches_explicit_mean_over_pixels():
    torch.manual_seed(2)
    z_fp = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    z_q = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    p, q = F.softmax(z_fp, dim=1), F.softmax(z_q, dim=1)
    expected = (p * (p / q).log()).sum(dim=1).mean()
    torch.testing.assert_close(pixel_kl_loss(z_fp, z_q), expected)
    torch.testing.assert_close(pixel_kl_loss(z_fp, z_q, temperature=2.0),
                               4 * pixel_kl_loss(z_fp / 2, z_q / 2))
    assert pixel_kl_loss(z_fp, z_fp).item() == pytest.approx(0.0, abs=1e-12)


def test_feature_mse_scale_invariant_per_pixel():
    torch.manual_seed(3)
    f = torch.randn(2, 4, 3, 3)
    assert feature_mse_loss([f], [2.5 * f]).item() == pytest.approx(0.0, abs=1e-12)


def test_feature_mse_hand_computed_and_level_average():
    # One pixel, channels [1, 0] vs [0, 1] (already unit norm): MSE = (1 + 1) / 2 = 1.
    a = torch.tensor([1., 0.]).reshape(1, 2, 1, 1)
    b = torch.tensor([0., 1.]).reshape(1, 2, 1, 1)
    assert feature_mse_loss(a, b).item() == pytest.approx(1.0)
    # Level 2 equal (0) -> mean over levels 0.5; levels may differ in shape.
    c = torch.randn(1, 3, 2, 2)
    assert feature_mse_loss([a, c], [b, c]).item() == pytest.approx(0.5)


def test_feature_mse_gradient_and_errors():
    f_fp = torch.randn(1, 3, 2, 2, requires_grad=True)
    f_q = torch.randn(1, 3, 2, 2, requires_grad=True)
    feature_mse_loss(f_fp, f_q).backward()
    assert f_fp.grad is None and f_q.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='2 levels and feats_q 1'):
        feature_mse_loss([f_fp, f_fp], [f_q])
