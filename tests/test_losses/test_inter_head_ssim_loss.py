"""L_head: inter-head SSIM of the attention-score maps."""
import pytest
import torch

from maskaq_plugin.losses.functional import inter_head_ssim_loss

C1, C2 = 0.01**2, 0.03**2


def naive_inter_head_ssim(layers, has_cls_token):
    """Loop over layers, images, query rows and head pairs i < j."""
    terms = []
    for s in layers:
        batch, heads, n, _ = s.shape
        for b in range(batch):
            for q in range(int(has_cls_token), n):
                maps = []
                for h in range(heads):
                    row = s[b, h, q, 1:] if has_cls_token else s[b, h, q]
                    maps.append((row - row.min()) / (row.max() - row.min() + 1e-8))
                for i in range(heads):
                    for j in range(i + 1, heads):
                        x, y = maps[i], maps[j]
                        mx, my = x.mean(), y.mean()
                        vx, vy = ((x - mx)**2).mean(), ((y - my)**2).mean()
                        cxy = ((x - mx) * (y - my)).mean()
                        ssim = ((2 * mx * my + C1) * (2 * cxy + C2)) / (
                            (mx**2 + my**2 + C1) * (vx + vy + C2))
                        terms.append(1 - ssim**2)
    return torch.stack(terms).mean()


def test_hand_computed_two_heads():
    # head 0 row [2, 7] -> [0, 1]; head 1 row [-1, -4] -> [1, 0] after min-max.
    # means 0.5 and 0.5, variances 0.25, covariance -0.25, so the luminance factor is 1
    # and SSIM = (2*(-0.25) + C2) / (0.25 + 0.25 + C2).
    scores = torch.tensor([[[[2., 7.]], [[-1., -4.]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    ssim = (C2 - 0.5) / (C2 + 0.5)
    loss = inter_head_ssim_loss(scores, has_cls_token=False, grid=(1, 2))
    assert loss.item() == pytest.approx(1 - ssim**2, abs=1e-7)
    assert loss.item() == pytest.approx(0.0071749, abs=1e-6)


def test_identical_heads_give_zero():
    torch.manual_seed(0)
    row = torch.randn(2, 1, 5, 5)
    scores = row.expand(2, 4, 5, 5)  # every head has the same map
    loss = inter_head_ssim_loss([scores, scores], has_cls_token=True, grid=(2, 2))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize('has_cls_token,shape,grid', [
    (True, (2, 3, 5, 5), (2, 2)),  # ViT: class token + 2x2 patches
    (False, (6, 3, 4, 4), (2, 2)),  # Swin: B*nW windows of 2x2
    (False, (2, 3, 8, 4), (2, 2)),  # SRA: 8 queries, 4 pooled keys
    (False, (1, 2, 6, 6), (2, 3)),  # non-square key grid
])
def test_matches_naive_loop(has_cls_token, shape, grid):
    torch.manual_seed(1)
    layers = [torch.randn(shape, dtype=torch.float64) for _ in range(2)]
    loss = inter_head_ssim_loss(layers, has_cls_token=has_cls_token, grid=grid)
    expected = naive_inter_head_ssim(layers, has_cls_token)
    torch.testing.assert_close(loss, expected)


def test_single_tensor_is_one_layer():
    torch.manual_seed(2)
    s = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(
        inter_head_ssim_loss(s, has_cls_token=True, grid=(2, 2)),
        inter_head_ssim_loss([s], has_cls_token=True, grid=(2, 2)))


def test_gradient_reaches_scores():
    torch.manual_seed(3)
    s = torch.randn(2, 3, 5, 5, requires_grad=True)
    inter_head_ssim_loss(s, has_cls_token=True, grid=(2, 2)).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_grid_mismatch_names_both_numbers():
    s = torch.randn(1, 2, 8, 4)  # SRA: 4 keys
    with pytest.raises(ValueError, match=r'grid=\(3, 2\) has 6 cells .* 4 patch keys'):
        inter_head_ssim_loss(s, has_cls_token=False, grid=(3, 2))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match='at least 2 heads, got H=1'):
        inter_head_ssim_loss(torch.randn(1, 1, 4, 4), has_cls_token=False, grid=(2, 2))
    with pytest.raises(ValueError, match='mixes layer shapes'):
        inter_head_ssim_loss([torch.randn(1, 2, 4, 4), torch.randn(1, 2, 9, 9)],
                             has_cls_token=False, grid=(2, 2))
    with pytest.raises(ValueError, match='empty'):
        inter_head_ssim_loss([], has_cls_token=False, grid=(2, 2))
