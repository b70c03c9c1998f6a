"""L_head: inter-head SSIM of the attention-score maps."""
import pytest
import torch
from authors_ssim import authors_swin, authors_swin_layer, authors_vit

from maskaq_plugin.losses.functional import inter_head_ssim_loss

C1, C2 = 0.01**2, 0.03**2


def naive_inter_head_ssim(layers, has_cls_token, pairs_only=False):
    """Loop over layers, images, query rows and all H×H head pairs (i, j), i = j included.

    ``pairs_only=True`` is the former definition (pairs i < j only), kept to measure
    the difference.
    """
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
                    for j in range(i + 1 if pairs_only else 0, heads):
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
    # and SSIM = (2*(-0.25) + C2) / (0.25 + 0.25 + C2). The 2×2 head matrix has that
    # value twice (off the diagonal) and SSIM = 1 twice (on it): L = (1 - SSIM²) / 2.
    scores = torch.tensor([[[[2., 7.]], [[-1., -4.]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    ssim = (C2 - 0.5) / (C2 + 0.5)
    loss = inter_head_ssim_loss(scores, has_cls_token=False, grid=(1, 2))
    assert loss.item() == pytest.approx((1 - ssim**2) / 2, abs=1e-7)
    assert loss.item() == pytest.approx(0.0071749 / 2, abs=1e-6)


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


@pytest.mark.parametrize('has_cls_token', [True, False])
def test_gradient_matches_the_naive_loop_with_ties(has_cls_token):
    # the hand-written backward (losses/_functional/_head_stats.py) against autograd
    # through the normalised maps; tied minima / maxima share their gradient evenly
    torch.manual_seed(2)
    layers = [torch.randn(2, 3, 5, 5, dtype=torch.float64) for _ in range(2)]
    layers[0][0, 0, 1, 2:4] = 9.0  # a row with its maximum twice
    layers[0][1, 2, 3, :] = 0.5  # a constant row: every entry is min and max
    layers[1][1, 1, 2, 1::2] = -9.0  # a row with its minimum twice (or three times)
    layers = [t.requires_grad_(True) for t in layers]
    grads = torch.autograd.grad(inter_head_ssim_loss(
        layers, has_cls_token=has_cls_token, grid=(1, 5 - has_cls_token)), layers)
    expected = torch.autograd.grad(naive_inter_head_ssim(layers, has_cls_token), layers)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


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
    with pytest.raises(ValueError, match='mixes layer shapes'):
        inter_head_ssim_loss([torch.randn(1, 2, 4, 4), torch.randn(1, 2, 9, 9)],
                             has_cls_token=False, grid=(2, 2))
    with pytest.raises(ValueError, match='empty'):
        inter_head_ssim_loss([], has_cls_token=False, grid=(2, 2))


def test_vit_matches_the_authors_arithmetic():
    """Class token, several layers: the authors' ``ssim_loss_att_map`` on the stack."""
    torch.manual_seed(4)
    layers = [torch.randn(3, 4, 10, 10, dtype=torch.float64) for _ in range(3)]  # 3x3 + cls
    loss = inter_head_ssim_loss(layers, has_cls_token=True, grid=(3, 3))
    torch.testing.assert_close(loss, authors_vit(layers, (3, 3)))
    torch.testing.assert_close(loss, naive_inter_head_ssim(layers, True))


def test_swin_windows_match_the_authors_arithmetic():
    """No class token, windows as the batch: per layer mean, then mean over layers."""
    torch.manual_seed(5)
    layers = [torch.randn(8, 3, 9, 9, dtype=torch.float64) for _ in range(2)]  # 3x3 windows
    loss = inter_head_ssim_loss(layers, has_cls_token=False, grid=(3, 3))
    torch.testing.assert_close(loss, authors_swin(layers, (3, 3)))


def test_group_mean_over_layers_with_a_single_head_layer_matches_the_authors():
    """The layer average of the objective (groups weighted by their layer count over
    ALL layers) is the authors' mean of per-layer means; a single-head layer adds 0 to
    the numerator and counts in the denominator."""
    torch.manual_seed(6)
    groups = [[torch.randn(8, 1, 4, 4, dtype=torch.float64) for _ in range(2)],  # 1 head
              [torch.randn(2, 4, 4, 4, dtype=torch.float64)]]  # 4 heads, 1 window
    grids = [(2, 2), (2, 2)]
    ours = sum(len(g) * inter_head_ssim_loss(g, has_cls_token=False, grid=grid)
               for g, grid in zip(groups, grids)) / sum(map(len, groups))
    expected = torch.stack([authors_swin_layer(att, grid) for g, grid in zip(groups, grids)
                            for att in g]).mean()
    torch.testing.assert_close(ours, expected)
    multi = inter_head_ssim_loss(groups[1], has_cls_token=False, grid=(2, 2))
    torch.testing.assert_close(ours, multi / 3)  # 0 + 0 + multi over three layers


def test_single_head_gives_exactly_zero_with_a_graph():
    torch.manual_seed(7)
    s = torch.randn(2, 1, 5, 5, requires_grad=True)
    loss = inter_head_ssim_loss([s, s * 2], has_cls_token=True, grid=(2, 2))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(s.grad).all()


def test_diagonal_is_zero_and_ratio_to_the_pair_mean_is_h_minus_1_over_h():
    """Full H×H mean = (H-1)/H × the pair mean over i < j (so the old pair mean fails)."""
    torch.manual_seed(8)
    heads = 4
    layers = [torch.randn(2, heads, 5, 5, dtype=torch.float64) for _ in range(2)]
    loss = inter_head_ssim_loss(layers, has_cls_token=True, grid=(2, 2))
    pair_mean = naive_inter_head_ssim(layers, True, pairs_only=True)
    torch.testing.assert_close(loss, pair_mean * (heads - 1) / heads)
    assert abs(loss.item() - pair_mean.item()) > 1e-3
