"""quantize_data_free: argument checks, the steps each method runs, bits, determinism."""
import copy
import doctest
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

import maskaq_plugin.api as api
import maskaq_plugin.qat.loop as qat_loop
from maskaq_plugin import quantize_data_free
from maskaq_plugin.qat import flat_view
from maskaq_plugin.quant import quantizer_bits

KW = dict(input_size=(3, 32, 32), num_classes=10, mean=(0.5, ) * 3, std=(0.5, ) * 3,
          w_bits=4, a_bits=8, num_samples=4, synthesis_iters=2, batch_size=4, epochs=1,
          progress=False)


def test_docstring_example_runs():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(verbose=False)
    for test in finder.find(api.quantize_data_free, 'quantize_data_free',
                            globs={}):
        runner.run(test)
    assert runner.summarize(verbose=False).attempted >= 5
    assert runner.failures == 0


@pytest.mark.parametrize('override,match', [
    (dict(w_bits=9), r'w_bits=9 .*integer in 2\.\.8'),
    (dict(a_bits=4.0), r'a_bits=4\.0'),
    (dict(w_bits=True), r'w_bits=True'),
    (dict(num_samples=0), r'num_samples=0 .*>= 1'),
    (dict(synthesis_iters=-1), r'synthesis_iters=-1'),
    (dict(epochs=0), r'epochs=0'),
    (dict(input_size=(32, 32)), r'input_size=\(32, 32\).*\(C, H, W\)'),
    (dict(mean=(0.5, 0.5)), r'mean=\(0.5, 0.5\).*C = 3'),
    (dict(method='zeroq'), r"method='zeroq'.*'maskaq'"),
    (dict(method='mimiq', refresh_every=2), r"refresh_every=2 .*only used by "
     r"method='maskaq'"),
    (dict(lr=0.0), r'lr=0\.0'),
])
def test_bad_arguments_name_the_value(make_vit, override, match):
    with pytest.raises(ValueError, match=match):
        quantize_data_free(make_vit(), **{**KW, **override})


def test_returns_eval_model_with_requested_bits_and_leaves_input_alone(make_vit):
    vit = make_vit()
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    q = quantize_data_free(vit, **{**KW, 'w_bits': 3, 'a_bits': 5})
    assert not q.training and not any(m.training for m in q.modules())
    kinds = set(quantizer_bits(q).values())
    assert kinds == {('weight', 3), ('activation', 5)}
    assert all(torch.equal(v, vit.state_dict()[k]) for k, v in before.items())
    assert not any(getattr(m, '_maskaq_explicit', False) for m in vit.modules())
    x = torch.randn(2, 3, 32, 32)
    assert q(x).shape == (2, 10) and not torch.allclose(q(x), vit(x))


def test_same_seed_same_model_even_under_no_grad(make_vit):
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = quantize_data_free(make_vit(), **KW, seed=1)(x)
        b = quantize_data_free(make_vit(), **KW, seed=1)(x)
        c = quantize_data_free(make_vit(), **KW, seed=2)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def _spy_rounds_and_losses(monkeypatch, describe):
    """Record ``describe(synthesizer)`` for each synthesis round and the flat view of the
    Stage 2 loss of each QAT step; returns the two lists, filled as they run."""
    calls, losses = [], []
    synthesize, qat_loss = api.Synthesizer.synthesize, qat_loop.classification_terms

    def spy_synthesize(self, *args, **kwargs):
        calls.append(describe(self))
        return synthesize(self, *args, **kwargs)

    def spy_loss(distiller, *args):
        losses.append(flat_view(distiller.distill_losses))
        return qat_loss(distiller, *args)

    monkeypatch.setattr(api.Synthesizer, 'synthesize', spy_synthesize)
    monkeypatch.setattr(qat_loop, 'classification_terms', spy_loss)
    return calls, losses


@pytest.mark.parametrize('method,rounds,qat_kw', [
    ('maskaq', [False, True, True], dict(mssim=10.0, w_high=2.0)),
    ('mimiq', [False], dict(mssim=10.0, w_high=1.0)),
    ('psaq', [False], dict(mssim=0.0)),
    ('noise', [False], dict(mssim=0.0)),
])
def test_each_method_runs_its_steps(make_vit, monkeypatch, method, rounds, qat_kw):
    calls, losses = _spy_rounds_and_losses(
        monkeypatch, lambda syn: (syn.method, syn.student is not None, sorted(syn.terms)))
    refresh = 1 if method == 'maskaq' else None
    quantize_data_free(make_vit(), **{**KW, 'epochs': 2, 'method': method,
                                      'refresh_every': refresh})
    assert [with_q for _, with_q, _ in calls] == rounds  # bootstrap, Q in the loop, refresh
    assert all(m == method for m, _, _ in calls)
    if method == 'maskaq':
        assert calls[0][2] == ['ent', 'head', 'sem', 'tv']
        assert calls[1][2] == ['ent', 'head', 'mad', 'sem', 'tv']
    assert len(losses) == 2 and all(kw.items() >= dict(qat_kw, task=1.0, temperature=5.0,
                                                       feat=0.0).items() for kw in losses)


def test_qat_loss_and_synthesis_options_reach_every_round(make_vit, monkeypatch):
    """The ablation switches: KD-only / random-mask QAT loss, Synthesizer options."""
    calls, losses = _spy_rounds_and_losses(
        monkeypatch, lambda syn: (syn.mask_mode, syn.objective.mask_mode, sorted(syn.terms)))
    quantize_data_free(make_vit(), **{**KW, 'epochs': 2, 'refresh_every': 1},
                       qat_loss=dict(mask_mode='random', mssim_weight=1.0),
                       synthesis=dict(mask_mode='random', loss_weights=dict(ent=0)))
    assert calls == [('random', 'random', ['head', 'sem', 'tv']),
                     ('random', 'random', ['head', 'mad', 'sem', 'tv']),
                     ('random', 'random', ['head', 'mad', 'sem', 'tv'])]
    assert all(kw.items() >= dict(mssim=1.0, w_high=2.0, mask_mode='random').items()
               for kw in losses) and len(losses) == 2
    with pytest.raises(ValueError, match=r"qat_loss has unknown keys \['lambda'\]"):
        quantize_data_free(make_vit(), **KW, qat_loss={'lambda': 1})
    with pytest.raises(ValueError, match=r"synthesis has unknown keys \['iters'\]"):
        quantize_data_free(make_vit(), **KW, synthesis=dict(iters=5))
    with pytest.raises(ValueError, match="mask_mode='top'"):
        quantize_data_free(make_vit(), **KW, synthesis=dict(mask_mode='top'))


DIGITS_CKPT = osp.join(osp.dirname(__file__), '..', '..', 'checkpoints', 'vit_tiny_digits.pth')


@pytest.mark.skipif(not osp.isfile(DIGITS_CKPT), reason='checkpoints/vit_tiny_digits.pth '
                    'missing (python tools/benchmark_cls.py trains it)')
def test_maskaq_student_is_closer_to_fp_than_noise_ptq_on_unseen_synthetic_images():
    """W4A4 on the digits ViT (96 % FP), KL to F on images of the distribution the student
    was trained on but did not see (another synthesis seed), seed 0.

    Recipe 'nncf': MaskAQ's student is much closer to F than one calibrated on noise
    without QAT (measured 0.062 vs 0.200; ratios 0.16-0.42 over seeds). Recipe 'lsq' (the
    authors' quantizers, default): its student is closer to F than the 'nncf' one
    (measured 0.032 vs 0.062 at seed 0, 0.051 vs 0.083 at seed 1); LSQ's init alone is a
    strong calibration here (noise PTQ 0.041), so at this tiny budget its QAT gain over
    PTQ is small and not asserted (on real digits see docs/benchmarks.md)."""
    from timm.models.vision_transformer import VisionTransformer

    from maskaq_plugin.attention import make_attention_explicit
    from maskaq_plugin.quant import QuantScheme, calibrate_ranges_, quantize_model
    from maskaq_plugin.synthesis import ClassificationPrior, Synthesizer
    ckpt = torch.load(DIGITS_CKPT, map_location='cpu', weights_only=True)
    meta = ckpt['meta']
    fp = VisionTransformer(**meta['vit_cfg'])
    fp.load_state_dict({k: v.float() for k, v in ckpt['state_dict'].items()})
    fp.eval()
    norm = dict(input_size=(3, 32, 32), mean=tuple(meta['mean']), std=tuple(meta['std']))
    students = {recipe: quantize_data_free(
        fp, **norm, num_classes=10, w_bits=4, a_bits=4, method='maskaq', num_samples=32,
        synthesis_iters=10, batch_size=16, epochs=6, seed=0, progress=False, recipe=recipe)
        for recipe in ('nncf', 'lsq')}
    teacher = copy.deepcopy(fp)
    make_attention_explicit(teacher)
    ptq = quantize_model(teacher, QuantScheme(4, 4, recipe='nncf'), torch.zeros(1, 3, 32, 32))
    lo = [(0 - m) / s for m, s in zip(meta['mean'], meta['std'])]
    hi = [(1 - m) / s for m, s in zip(meta['mean'], meta['std'])]
    noise = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    calibrate_ranges_(ptq, noise.clamp(min(lo), max(hi)))
    unseen = Synthesizer(teacher, prior=ClassificationPrior(10), **norm, iters=10,
                         progress=False).synthesize(32, 16, seed=12345).images

    def kl_to_fp(model):
        with torch.no_grad():
            return F.kl_div(F.log_softmax(model(unseen), 1), F.log_softmax(fp(unseen), 1),
                            log_target=True, reduction='batchmean').item()

    kl = {name: kl_to_fp(model) for name, model in dict(students, ptq=ptq).items()}
    assert kl['nncf'] < 0.5 * kl['ptq'], kl
    assert kl['lsq'] < kl['nncf'], kl
