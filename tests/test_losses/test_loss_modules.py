"""Registered loss modules: weighting, registry build, docstring examples."""
import doctest
import importlib
import pkgutil

import pytest
import torch
from mmengine.registry import MODELS

import maskaq_plugin.losses as losses
from maskaq_plugin.losses import functional as LF


def make_inputs():
    torch.manual_seed(0)
    scores_fp = [torch.randn(2, 3, 5, 5) for _ in range(2)]
    scores_q = [s + 0.1 * torch.randn_like(s) for s in scores_fp]
    ctx_fp = [torch.randn(2, 3, 5, 4) for _ in range(2)]
    ctx_q = [c + 0.1 * torch.randn_like(c) for c in ctx_fp]
    mask = LF.informative_region_mask(scores_fp, ratio=0.5, has_cls_token=True)
    return scores_fp, scores_q, ctx_fp, ctx_q, mask


def cases():
    scores_fp, scores_q, ctx_fp, ctx_q, mask = make_inputs()
    images, logits = torch.randn(2, 3, 6, 6), (torch.randn(2, 10), torch.randn(2, 10))
    dense = (torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3))
    return [
        ('InterHeadSSIMLoss', {}, (scores_fp,), dict(has_cls_token=True, grid=(2, 2)),
         lambda: LF.inter_head_ssim_loss(scores_fp, has_cls_token=True, grid=(2, 2))),
        ('PatchEntropyLoss', dict(num_rows=3), (scores_fp,),
         dict(has_cls_token=True, generator=torch.Generator().manual_seed(1)),
         lambda: LF.patch_similarity_entropy(scores_fp, has_cls_token=True, num_rows=3,
                                             generator=torch.Generator().manual_seed(1))),
        ('MaskedAttentionDifferenceLoss', {}, (scores_fp, scores_q, mask),
         dict(has_cls_token=True),
         lambda: LF.masked_attention_difference(scores_fp, scores_q, mask, has_cls_token=True)),
        ('MaskedAttentionSSIMLoss', dict(top_ratio=0.5), (ctx_fp, ctx_q),
         dict(has_cls_token=True),
         lambda: LF.masked_attention_ssim(ctx_fp, ctx_q, has_cls_token=True, top_ratio=0.5)),
        ('TotalVariationLoss', {}, (images,), {}, lambda: LF.total_variation(images)),
        ('KDLoss', dict(temperature=2.0), logits, {},
         lambda: LF.kd_kl_loss(*logits, temperature=2.0)),
        ('PixelKLLoss', {}, dense, {}, lambda: LF.pixel_kl_loss(*dense)),
        ('FeatureMSELoss', {}, dense, {}, lambda: LF.feature_mse_loss(*dense)),
    ]


@pytest.mark.parametrize('case', cases(), ids=lambda c: c[0])
def test_registry_build_and_loss_weight(case):
    name, cfg, args, kwargs, reference = case
    module = MODELS.build(dict(type=name, loss_weight=3.0, **cfg))
    assert isinstance(module, getattr(losses, name))
    torch.testing.assert_close(module(*args, **kwargs), 3.0 * reference())
    with pytest.raises(ValueError, match='loss_weight must be >= 0, got -1'):
        MODELS.build(dict(type=name, loss_weight=-1, **cfg))


def test_default_weights_follow_method():
    assert losses.InterHeadSSIMLoss().loss_weight == 1.0
    assert losses.PatchEntropyLoss().loss_weight == 1.0
    assert losses.TotalVariationLoss().loss_weight == 2.5e-5
    assert losses.MaskedAttentionDifferenceLoss().loss_weight == 0.1
    assert losses.MaskedAttentionSSIMLoss().loss_weight == 10.0
    assert losses.KDLoss().temperature == 5.0


def test_docstring_examples_run():
    names = [losses.__name__] + [
        info.name for info in pkgutil.walk_packages(losses.__path__, losses.__name__ + '.')
    ]
    attempted = 0
    for name in names:
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, f'docstring example failed in {name}'
        attempted += result.attempted
    assert attempted >= 4
