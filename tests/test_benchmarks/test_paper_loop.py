"""The paper loop of the speed benchmark computes what our Synthesizer computes.

``benchmarks/paper_loop.py`` is the per-image, per-layer baseline of
``tools/benchmark.py synthesis``; the speed ratio means something only at equal work.
From the same seed (noise, labels, random draws) both must give the same loss terms at
the first iteration and the same first step of the images.
"""
import importlib.util
import os.path as osp

import pytest
import torch

from maskaq_plugin.attention import make_attention_explicit
from maskaq_plugin.quant import QuantScheme, quantize_model
from maskaq_plugin.synthesis import ClassificationPrior, Synthesizer
from maskaq_plugin.synthesis.synthesizer import batch_seed

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TERMS = {'head', 'sem', 'tv', 'ent', 'mad', 'loss'}


def _paper_loop():
    spec = importlib.util.spec_from_file_location(
        'paper_loop', osp.join(ROOT, 'benchmarks', 'paper_loop.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _vit():
    """48 px, patch 4: 144 patches > 64, so L_ent draws random rows."""
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    return VisionTransformer(img_size=48, patch_size=4, embed_dim=24, depth=2, num_heads=3,
                             num_classes=10).eval()


def _swin():
    """32 px, patch 4, window 4: stages of 4 and 1 windows (two groups), no class token."""
    from timm.models.swin_transformer import SwinTransformer
    torch.manual_seed(0)
    return SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16,
                           depths=(1, 1), num_heads=(2, 4), num_classes=10).eval()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('build', [_vit, _swin], ids=['vit', 'swin'])
def test_same_terms_and_first_step_as_synthesizer(build):
    paper_loop = _paper_loop()
    teacher = build()
    make_attention_explicit(teacher)
    size = (3, *teacher.patch_embed.img_size)
    calib = torch.randn(4, *size, generator=torch.Generator().manual_seed(1))
    student = quantize_model(teacher, QuantScheme(4, 4), calib[:1], calib_inputs=calib)
    ours = Synthesizer(teacher, prior=ClassificationPrior(10), input_size=size, mean=MEAN,
                       std=STD, student=student, iters=1, progress=False)
    res = ours.synthesize(4, 4, seed=3)
    flags = [p.requires_grad for p in teacher.parameters()]
    out = paper_loop.generate(teacher, student, batch_size=4, iters=1, num_classes=10,
                              input_size=size, mean=MEAN, std=STD,
                              gen=torch.Generator().manual_seed(batch_seed(3, 0)))
    assert set(res.losses) == set(out['first']) == TERMS
    for key in TERMS:
        assert out['first'][key] == pytest.approx(res.losses[key], rel=1e-5, abs=1e-7), key
    assert res.losses['mad'] > 0 and res.losses['ent'] != 0
    assert out['labels'].tolist() == res.targets
    # one AdamW step of lr 0.1 (about ±0.1 per pixel): the same step up to rounding
    assert (out['images'] - res.images).abs().max() < 5e-3
    # the loop leaves the models' parameters as it found them (and without gradients)
    assert [p.requires_grad for p in teacher.parameters()] == flags
    assert all(p.grad is None for p in teacher.parameters())


def test_row_draws_and_mask_drop_follow_the_generator():
    """With the same generator state, L_ent rows and the mask drop are the same draws."""
    from maskaq_plugin.losses.functional import (informative_region_mask,
                                                 patch_similarity_entropy)
    paper_loop = _paper_loop()

    class Rec:  # the two fields the loop reads from an AttentionRecord
        def __init__(self, scores):
            self.scores, self.has_cls_token = scores, True

    scores = [torch.randn(3, 2, 101, 101, generator=torch.Generator().manual_seed(i))
              for i in range(2)]  # 100 patches > 64 rows
    ent = patch_similarity_entropy(scores, has_cls_token=True,
                                   generator=torch.Generator().manual_seed(5))
    ent_p = paper_loop.attention_entropy_loss_similarity(
        [[Rec(s) for s in scores]], torch.Generator().manual_seed(5))
    assert float(ent_p) == pytest.approx(float(ent), rel=1e-6)
    mask = informative_region_mask(scores, ratio=0.3, has_cls_token=True,
                                   generator=torch.Generator().manual_seed(6))
    mask_p = paper_loop.generate_attention_mask([Rec(s) for s in scores], 0.3,
                                                torch.Generator().manual_seed(6))
    assert torch.equal(mask, mask_p) and mask.sum(1).tolist() == [21.0] * 3


def test_first_synthesizer_version_does_the_same_work():
    """The ``before`` of the speed benchmark (our first version, kept in benchmarks/) gives
    the same terms and images as the current Synthesizer, so before / after is a speed
    ratio at equal work."""
    import sys
    sys.path.insert(0, ROOT)
    from benchmarks.synthesis_speed import load_synthesizer
    first = load_synthesizer('benchmarks/synthesizer_first.py')
    assert first is not Synthesizer
    teacher = _swin()
    make_attention_explicit(teacher)
    size = (3, *teacher.patch_embed.img_size)
    calib = torch.randn(4, *size, generator=torch.Generator().manual_seed(1))
    student = quantize_model(teacher, QuantScheme(4, 4), calib[:1], calib_inputs=calib)
    out = {}
    for name, cls in (('first', first), ('now', Synthesizer)):
        syn = cls(teacher, prior=ClassificationPrior(10), input_size=size, mean=MEAN, std=STD,
                  student=student, iters=3, progress=False)
        out[name] = syn.synthesize(4, 4, seed=5)
    assert set(out['now'].losses) == TERMS and out['now'].losses['mad'] > 0
    assert out['first'].losses == out['now'].losses
    assert torch.equal(out['first'].images, out['now'].images)
