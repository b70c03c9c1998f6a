"""L_mssim: token-weighted SSIM between the attention outputs of F and Q."""
import pytest
import torch

from maskaq_plugin.losses.functional import masked_attention_ssim

C2 = 0.03**2


def naive_masked_ssim(ctx_fp, ctx_q, has_cls_token, top_ratio=0.1, w_high=2.0, w_low=1.0,
                      tops=None):
    """Loop over layers, images, heads and channels (``tops[l][b]``: given top tokens)."""
    terms = []
    for layer, (o_fp, o_q) in enumerate(zip(ctx_fp, ctx_q)):
        if has_cls_token:
            o_fp, o_q = o_fp[:, :, 1:], o_q[:, :, 1:]
        batch, heads, n, d = o_fp.shape
        k = max(1, round(top_ratio * n))
        for b in range(batch):
            importance = [o_fp[b, :, t].abs().mean() for t in range(n)]
            top = sorted(range(n), key=lambda t: -importance[t])[:k] if tops is None \
                else tops[layer][b].tolist()
            assert len(top) == k
            w = torch.tensor([w_high if t in top else w_low for t in range(n)],
                             dtype=o_fp.dtype)
            w = w / w.sum()
            for h in range(heads):
                for c in range(d):
                    x, y = o_fp[b, h, :, c], o_q[b, h, :, c]
                    mx, my = (w * x).sum(), (w * y).sum()
                    vx, vy = (w * (x - mx)**2).sum(), (w * (y - my)**2).sum()
                    cxy = (w * (x - mx) * (y - my)).sum()
                    terms.append((2 * cxy + C2) / (vx + vy + C2))
    return 1 - torch.stack(terms).mean()


def test_hand_computed_unweighted():
    # O^F = [0, 2], O^Q = [0, 1] over two tokens, equal weights: means 1 and 0.5,
    # variances 1 and 0.25, covariance 0.5 -> ssim = (1 + C2) / (1.25 + C2).
    o_fp = torch.tensor([0., 2.], dtype=torch.float64).reshape(1, 1, 2, 1)
    o_q = torch.tensor([0., 1.], dtype=torch.float64).reshape(1, 1, 2, 1)
    loss = masked_attention_ssim(o_fp, o_q, has_cls_token=False, w_high=1.0, w_low=1.0)
    assert loss.item() == pytest.approx(1 - (1 + C2) / (1.25 + C2))


def test_hand_computed_weighted_with_cls_token():
    # Class token (value 100) is dropped. Patch tokens O^F = [0, 1, 4], O^Q = [0, 1, 2];
    # k = max(1, round(0.1 * 3)) = 1 -> token 2 (|4| largest) gets weight 2:
    # w = [1/4, 1/4, 1/2]. mu_F = 2.25, mu_Q = 1.25, var_F = 3.1875, var_Q = 0.6875,
    # cov = 1.4375 -> ssim = (2.875 + C2) / (3.875 + C2).
    o_fp = torch.tensor([100., 0., 1., 4.], dtype=torch.float64).reshape(1, 1, 4, 1)
    o_q = torch.tensor([-50., 0., 1., 2.], dtype=torch.float64).reshape(1, 1, 4, 1)
    loss = masked_attention_ssim(o_fp, o_q, has_cls_token=True)
    assert loss.item() == pytest.approx(1 - (2.875 + C2) / (3.875 + C2))


def test_identical_outputs_give_zero():
    torch.manual_seed(0)
    ctx = [torch.randn(2, 3, 9, 4) for _ in range(2)]
    loss = masked_attention_ssim(ctx, [c.clone() for c in ctx], has_cls_token=True)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize('has_cls_token,n,kwargs', [
    (True, 21, {}),  # 20 patch tokens -> 2 weighted 2
    (False, 16, {}),  # Swin window / PVT queries
    (False, 10, dict(top_ratio=0.5, w_high=3.0, w_low=0.5)),
])
def test_matches_naive_loop(has_cls_token, n, kwargs):
    torch.manual_seed(1)
    ctx_fp = [torch.randn(2, 2, n, 3, dtype=torch.float64) for _ in range(2)]
    ctx_q = [c + 0.3 * torch.randn_like(c) for c in ctx_fp]
    loss = masked_attention_ssim(ctx_fp, ctx_q, has_cls_token=has_cls_token, **kwargs)
    torch.testing.assert_close(loss, naive_masked_ssim(ctx_fp, ctx_q, has_cls_token, **kwargs))


def test_gradient_reaches_student_only():
    torch.manual_seed(2)
    o_fp = torch.randn(2, 2, 9, 4, requires_grad=True)
    o_q = (o_fp.detach() + 0.1 * torch.randn(2, 2, 9, 4)).requires_grad_()
    masked_attention_ssim(o_fp, o_q, has_cls_token=True).backward()
    assert o_fp.grad is None
    assert o_q.grad is not None and o_q.grad.abs().sum() > 0


def test_bad_arguments_raise():
    x = torch.randn(1, 1, 4, 2)
    with pytest.raises(ValueError, match='top_ratio must be in'):
        masked_attention_ssim(x, x, has_cls_token=False, top_ratio=1.5)
    with pytest.raises(ValueError, match='w_high=0.0'):
        masked_attention_ssim(x, x, has_cls_token=False, w_high=0.0)
    with pytest.raises(ValueError, match='must match'):
        masked_attention_ssim(x, torch.randn(1, 1, 4, 3), has_cls_token=False)


@pytest.mark.parametrize('has_cls_token,n,top_ratio', [(True, 21, 0.1), (False, 16, 0.25)])
def test_random_mask_mode_draws_k_tokens_independent_of_the_teacher(has_cls_token, n,
                                                                    top_ratio):
    torch.manual_seed(4)
    ctx_fp = [torch.randn(2, 2, n, 3, dtype=torch.float64) for _ in range(2)]
    ctx_q = [c + 0.3 * torch.randn_like(c) for c in ctx_fp]
    loss = masked_attention_ssim(ctx_fp, ctx_q, has_cls_token=has_cls_token,
                                 top_ratio=top_ratio, mask_mode='random',
                                 generator=torch.Generator().manual_seed(7))
    # the same draw, made without looking at O^F: k uniformly drawn tokens per (layer, image)
    p = n - int(has_cls_token)
    k = max(1, round(top_ratio * p))
    tops = torch.rand(2, 2, p, generator=torch.Generator().manual_seed(7)).argsort(-1)[..., :k]
    torch.testing.assert_close(loss, naive_masked_ssim(ctx_fp, ctx_q, has_cls_token,
                                                       top_ratio=top_ratio, tops=tops))
    informative = masked_attention_ssim(ctx_fp, ctx_q, has_cls_token=has_cls_token,
                                        top_ratio=top_ratio)
    assert loss.item() != pytest.approx(informative.item(), rel=1e-6)
    with pytest.raises(ValueError, match="mask_mode='topk'"):
        masked_attention_ssim(ctx_fp, ctx_q, has_cls_token=has_cls_token, mask_mode='topk')
