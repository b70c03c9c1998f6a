"""Informative-region mask and L_mad (masked attention difference)."""
import pytest
import torch

from maskaq_plugin.losses.functional import informative_region_mask, masked_attention_difference


def scores_with_profile(profile, heads=2, queries=3):
    """(1, H, N, P) no-cls scores whose mean over heads and query rows is `profile`."""
    p = torch.as_tensor(profile, dtype=torch.float32)
    noise = torch.linspace(-1, 1, heads * queries).reshape(heads, queries, 1)
    return (p + noise).unsqueeze(0)  # the noise averages to 0


@pytest.mark.parametrize('ratio,drop,expected_ones', [
    (0.5, 0.0, 8),  # k = 8, nothing dropped
    (0.5, 0.25, 6),  # k = 8, keep round(8 * 0.75) = 6
    (0.5, 0.3, 6),  # k = 8, keep round(5.6) = 6
    (0.25, 0.5, 2),  # k = 4, keep 2
    (0.01, 0.3, 1),  # k = max(1, int(0.16)) = 1, keep 1
    (0.3, 0.0, 4),  # k = int(4.8) = 4 (a floor, as the authors; rounding would give 5)
    (0.3, 0.3, 3),  # k = 4, keep round(2.8) = 3 (with k = 5: round(3.5) = 4)
    (0.5, 0.99, 1),  # k = 8, round(0.08) = 0 -> at least one stays
    (1.0, 0.0, 16),
])
def test_count_of_ones(ratio, drop, expected_ones):
    profile = torch.arange(16.)
    s = scores_with_profile(profile).expand(3, -1, -1, -1)  # 3 images
    mask = informative_region_mask(s, ratio=ratio, has_cls_token=False, drop=drop,
                                   generator=torch.Generator().manual_seed(0))
    assert mask.shape == (3, 16) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask.sum(dim=1).tolist() == [expected_ones] * 3
    k = max(1, int(ratio * 16))
    assert mask[:, :16 - k].sum() == 0  # kept keys are among the top k (largest values)


def test_no_drop_keeps_exact_top_k():
    profile = torch.tensor([5., 1., 9., 3., 7., 0., 2., 8.])
    mask = informative_region_mask(scores_with_profile(profile), ratio=0.5,
                                   has_cls_token=False, drop=0.0)
    assert mask[0].tolist() == [1, 0, 1, 0, 1, 0, 0, 1]


def authors_generate_attention_mask(att_maps, ratio):
    """Transcription of the authors' ``generate_attention_mask`` (ViT path, no drop):
    layers then heads averaged, class-token row over patch keys, per image the top
    ``k = max(1, int(len(att_b) * ratio))`` keys."""
    combined = torch.stack(att_maps).mean(0).mean(1)[:, 0, 1:]
    masks = []
    for b in range(combined.shape[0]):
        att_b = combined[b]
        k = max(1, int(len(att_b) * ratio))
        mask = torch.zeros_like(att_b)
        mask[torch.topk(att_b, k)[1]] = 1.0
        masks.append(mask)
    return torch.stack(masks)


def test_k_is_the_floor_of_ratio_times_p():
    """P = 49, ρ = 0.3: ρ·P = 14.7 -> k = 14 keys before the drop (rounding: 15)."""
    torch.manual_seed(0)
    s = torch.randn(3, 2, 50, 50)  # class token + 7x7 patches
    mask = informative_region_mask(s, ratio=0.3, has_cls_token=True, drop=0.0)
    assert mask.shape == (3, 49) and mask.sum(1).tolist() == [14.0] * 3
    dropped = informative_region_mask(s, ratio=0.3, has_cls_token=True, drop=0.3,
                                      generator=torch.Generator().manual_seed(0))
    assert dropped.sum(1).tolist() == [10.0] * 3  # round(14 * 0.7) = round(9.8) = 10
    assert (dropped <= mask).all()  # the drop keeps a subset of the top 14


@pytest.mark.parametrize('num_patches,ratio', [(49, 0.3), (196, 0.5), (196, 0.1),
                                                (196, 0.37), (16, 0.43), (100, 0.29)])
def test_top_k_matches_the_authors_generate_attention_mask(num_patches, ratio):
    torch.manual_seed(num_patches)
    n = num_patches + 1
    layers = [torch.randn(4, 3, n, n, dtype=torch.float64) for _ in range(3)]
    mask = informative_region_mask(layers, ratio=ratio, has_cls_token=True, drop=0.0)
    expected = authors_generate_attention_mask(layers, ratio)
    assert torch.equal(mask, expected)
    assert mask.sum(1).tolist() == [float(max(1, int(num_patches * ratio)))] * 4


def test_cls_path_uses_the_class_token_row():
    # Class row (query 0) ranks patch keys 0 < 1 < 2 < 3; the other rows rank them in
    # reverse and dominate their mean, so the two reductions disagree.
    s = torch.zeros(1, 1, 5, 5)
    s[0, 0, 0, 1:] = torch.tensor([1., 2., 3., 4.])
    s[0, 0, 1:, 1:] = torch.tensor([40., 30., 20., 10.])
    with_cls = informative_region_mask(s, ratio=0.25, has_cls_token=True, drop=0.0)
    assert with_cls[0].tolist() == [0, 0, 0, 1]
    without = informative_region_mask(s, ratio=0.2, has_cls_token=False, drop=0.0)
    assert without.shape == (1, 5) and without[0].tolist() == [0, 1, 0, 0, 0]


def test_layers_and_heads_are_averaged():
    a = torch.zeros(1, 2, 1, 3)
    b = torch.zeros(1, 2, 1, 3)
    a[0, 0, 0] = torch.tensor([6., 0., 0.])  # layer 1 favours key 0 through one head
    b[0, :, 0] = torch.tensor([0., 2., 1.])  # layer 2 favours key 1 through both heads
    # mean over layers and heads: key 0 -> 1.5, key 1 -> 1.0, key 2 -> 0.5
    mask = informative_region_mask([a, b], ratio=0.34, has_cls_token=False, drop=0.0)
    assert mask[0].tolist() == [1, 0, 0]


def test_sra_mask_is_over_keys():
    s = torch.randn(2, 2, 12, 4)  # 12 queries, 4 pooled keys
    mask = informative_region_mask(s, ratio=0.5, has_cls_token=False, drop=0.0)
    assert mask.shape == (2, 4) and mask.sum(dim=1).tolist() == [2, 2]


def test_generator_determinism_and_variety():
    s = scores_with_profile(torch.arange(20.)).expand(2, -1, -1, -1)

    def run(seed):
        return informative_region_mask(s, ratio=0.5, has_cls_token=False, drop=0.3,
                                       generator=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(run(3), run(3), rtol=0, atol=0)
    assert len({tuple(run(seed)[0].tolist()) for seed in range(8)}) > 1


def test_mask_carries_no_gradient():
    s = torch.randn(2, 2, 5, 5, requires_grad=True)
    mask = informative_region_mask(s, ratio=0.5, has_cls_token=True)
    assert not mask.requires_grad and mask.grad_fn is None


@pytest.mark.parametrize('kwargs,match', [
    (dict(ratio=0.0), r'ratio must be in \(0, 1\], got 0.0'),
    (dict(ratio=0.5, drop=1.0), r'drop must be in \[0, 1\), got 1.0'),
])
def test_mask_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        informative_region_mask(torch.randn(1, 1, 3, 3), has_cls_token=False, **kwargs)


def cls_scores(rows):
    """(B, H, 3, 3) scores with a class token; rows[b][h] is the class row over 2 patches."""
    rows = torch.as_tensor(rows, dtype=torch.float64)
    s = torch.zeros(*rows.shape[:2], 3, 3, dtype=torch.float64)
    s[:, :, 0, 1:] = rows
    s[:, :, 1:, :] = 5.0  # patch-query rows must not enter
    return s


def test_mad_hand_computed():
    # F heads [0, 2] and [2, 2] -> s_F = [1, 2]; Q heads both [0, 4] -> s_Q = [0, 4];
    # |s_F - s_Q| = [1, 2].
    s_fp = cls_scores([[[0., 2.], [2., 2.]]])
    s_q = cls_scores([[[0., 4.], [0., 4.]]])
    for mask, expected in [([1., 0.], 1.0), ([0., 1.], 2.0), ([1., 1.], 1.5)]:
        loss = masked_attention_difference(s_fp, s_q, torch.tensor([mask]), has_cls_token=True)
        assert loss.item() == pytest.approx(expected)


def test_mad_ratio_per_image_then_mean():
    s_fp = cls_scores([[[1., 2.]], [[1., 2.]]])
    s_q = cls_scores([[[0., 4.]], [[0., 4.]]])
    mask = torch.tensor([[1., 1.], [0., 1.]])  # image 0 -> 3/2, image 1 -> 2/1
    loss = masked_attention_difference(s_fp, s_q, mask, has_cls_token=True)
    assert loss.item() == pytest.approx((1.5 + 2.0) / 2)


def test_mad_averages_layers():
    s_fp = [cls_scores([[[1., 2.]]]), cls_scores([[[0., 0.]]])]
    s_q = [cls_scores([[[0., 4.]]]), cls_scores([[[3., 1.]]])]
    loss = masked_attention_difference(s_fp, s_q, torch.tensor([[1., 1.]]), has_cls_token=True)
    assert loss.item() == pytest.approx((1.5 + 2.0) / 2)


def test_mad_without_cls_uses_mean_over_query_rows():
    s_fp = torch.tensor([[[[1., 3.], [3., 5.]]]])  # mean over query rows: [2, 4]
    loss = masked_attention_difference(s_fp, torch.zeros_like(s_fp), torch.ones(1, 2),
                                       has_cls_token=False)
    assert loss.item() == pytest.approx(3.0)


def test_mad_sra_shapes_and_errors():
    torch.manual_seed(0)
    s_fp, s_q = torch.randn(2, 2, 12, 4), torch.randn(2, 2, 12, 4)
    mask = informative_region_mask(s_fp, ratio=0.5, has_cls_token=False, drop=0.0)
    expected = ((s_fp.mean(1).mean(1) - s_q.mean(1).mean(1)).abs() * mask).sum(1) / 2
    loss = masked_attention_difference(s_fp, s_q, mask, has_cls_token=False)
    torch.testing.assert_close(loss, expected.mean())
    with pytest.raises(ValueError, match=r'mask has shape \(2, 12\) .* \(2, 4\)'):
        masked_attention_difference(s_fp, s_q, torch.ones(2, 12), has_cls_token=False)
    with pytest.raises(ValueError, match='must match'):
        masked_attention_difference(s_fp, s_q[:, :, :, :3], mask, has_cls_token=False)


def test_mad_gradient_flows_to_both_models():
    torch.manual_seed(1)
    s_fp = torch.randn(2, 2, 5, 5, requires_grad=True)
    s_q = torch.randn(2, 2, 5, 5, requires_grad=True)
    mask = informative_region_mask(s_fp, ratio=0.5, has_cls_token=True)
    masked_attention_difference([s_fp], [s_q], mask, has_cls_token=True).backward()
    assert s_fp.grad.abs().sum() > 0 and s_q.grad.abs().sum() > 0
    assert masked_attention_difference(s_fp, s_fp, mask, has_cls_token=True).item() == 0.0


@pytest.mark.parametrize('ratio,drop', [(0.5, 0.3), (0.25, 0.5), (0.01, 0.3), (1.0, 0.0)])
def test_random_mode_keeps_the_same_count_independent_of_the_scores(ratio, drop):
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    s = scores_with_profile(torch.arange(16.)).expand(4, -1, -1, -1)
    informative = informative_region_mask(s, ratio=ratio, has_cls_token=False, drop=drop,
                                          generator=gen())
    rand = informative_region_mask(s, ratio=ratio, has_cls_token=False, drop=drop,
                                   generator=gen(), mask_mode='random')
    assert rand.shape == (4, 16) and set(rand.unique().tolist()) <= {0.0, 1.0}
    assert rand.sum(1).tolist() == informative.sum(1).tolist()
    # other scores, same generator: the same random mask
    other = informative_region_mask(torch.randn(4, 2, 3, 16), ratio=ratio,
                                    has_cls_token=False, drop=drop, generator=gen(),
                                    mask_mode='random')
    assert torch.equal(rand, other)


def test_random_mode_is_uniform_over_all_keys():
    # the informative mask never leaves the top half; the random one covers every key
    s = scores_with_profile(torch.arange(16.)).expand(2000, -1, -1, -1)
    rand = informative_region_mask(s, ratio=0.5, has_cls_token=False, drop=0.3,
                                   generator=torch.Generator().manual_seed(0),
                                   mask_mode='random')
    freq = rand.mean(0)  # each key kept with probability 6 / 16
    assert torch.allclose(freq, torch.full((16, ), 6 / 16), atol=0.04)
    with pytest.raises(ValueError, match="mask_mode='top'"):
        informative_region_mask(s, ratio=0.5, has_cls_token=False, mask_mode='top')
