"""Stage 1 synthesizer: loss terms per method, clamp, determinism, retries, frozen models."""
import copy

import pytest
import torch
import torch.nn.functional as F

from maskaq_plugin.synthesis import ClassificationPrior, Synthesizer
from maskaq_plugin.synthesis.synthesizer import batch_seed

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def synth(model, iters=3, **kwargs):
    kwargs = {**dict(prior=ClassificationPrior(10), input_size=(3, 32, 32), mean=MEAN,
                     std=STD, iters=iters, progress=False), **kwargs}
    return Synthesizer(model, **kwargs)


@pytest.mark.parametrize('method,keys', [
    ('maskaq', {'head', 'sem', 'tv', 'ent'}),
    ('mimiq', {'head', 'sem', 'tv'}),
    ('psaq', {'ent', 'sem', 'tv'}),
    ('noise', set()),
])
def test_each_method_uses_exactly_its_terms(make_vit, method, keys):
    res = synth(make_vit(), method=method).synthesize(3, 2, seed=0)
    assert set(res.losses) == (keys | {'loss'} if keys else set())
    assert res.images.shape == (3, 3, 32, 32) and len(res.targets) == 3
    assert res.masks is None
    if keys:
        weights = dict(head=1.0, sem=1.0, tv=2.5e-5, ent=1.0)
        # every batch reports its last iteration; 'loss' is the weighted sum of the terms
        assert res.losses['loss'] == pytest.approx(
            sum(weights[k] * res.losses[k] for k in keys), rel=1e-5)


def test_mad_and_mask_only_with_a_student(make_vit):
    teacher, student = make_vit(seed=0), make_vit(seed=1)
    without = synth(teacher, method='maskaq').synthesize(2, 2, seed=0)
    with_q = synth(teacher, student=student, method='maskaq').synthesize(3, 2, seed=0)
    assert 'mad' not in without.losses and without.masks is None
    assert 'mad' in with_q.losses and with_q.losses['mad'] > 0
    # 16 patches; last iteration ρ = 0.1 -> k = round(1.6) = 2, keep round(1.4) = 1
    assert with_q.masks.shape == (3, 16)
    assert with_q.masks.sum(1).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match='student'):
        synth(teacher, student=student, method='psaq')


def test_random_mask_mode_same_count_independent_of_the_teacher(make_vit):
    """mask_mode='random' (ablation): as many patches as the informative mask, drawn
    from the generator only, so two different teachers get the same mask."""
    student = make_vit(seed=1)
    masks = {}
    for mode in ('informative', 'random'):
        for t_seed in (0, 2):
            syn = synth(make_vit(seed=t_seed), student=student, iters=1, mask_mode=mode)
            assert syn.mask_mode == mode and syn.objective.mask_mode == mode
            # one iteration: ρ = 0.5 -> k = 8 of 16 patches, keep round(5.6) = 6
            masks[mode, t_seed] = syn.synthesize(4, 4, seed=0).masks
    for m in masks.values():
        assert m.shape == (4, 16) and m.sum(1).tolist() == [6.0] * 4
    assert torch.equal(masks['random', 0], masks['random', 2])
    assert not torch.equal(masks['informative', 0], masks['informative', 2])
    with pytest.raises(ValueError, match="mask_mode='top'"):
        synth(make_vit(), student=student, mask_mode='top')


def test_hierarchical_backbone_masks_per_group(make_swin):
    teacher, student = make_swin(seed=0), make_swin(seed=1)
    res = synth(teacher, student=student).synthesize(2, 2, seed=0)
    assert set(res.losses) == {'head', 'sem', 'tv', 'ent', 'mad', 'loss'}
    # first group: stage 1, 4 windows of 4x4 tokens per image, side by side
    assert res.masks.shape == (2, 4 * 16)
    assert all(torch.isfinite(torch.tensor(list(res.losses.values()))))


def test_images_are_clamped_to_the_pixel_range(make_vit):
    for method in ('maskaq', 'noise'):
        x = synth(make_vit(), method=method, lr=1.0).synthesize(4, 4, seed=3).images
        lo = ((0 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
        hi = ((1 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
        assert (x >= lo - 1e-6).all() and (x <= hi + 1e-6).all()
        assert ((x - lo).abs() < 1e-6).any() and ((x - hi).abs() < 1e-6).any()  # clamp bites


def test_same_seed_same_bank_different_seed_different(make_vit):
    vit = make_vit()
    a = synth(vit).synthesize(5, 2, seed=7)
    b = synth(vit).synthesize(5, 2, seed=7)
    c = synth(vit).synthesize(5, 2, seed=8)
    assert torch.equal(a.images, b.images) and a.targets == b.targets
    assert not torch.allclose(a.images, c.images)
    assert not torch.equal(a.images[:2], a.images[2:4])  # batches differ from each other
    assert len({batch_seed(0, 1), batch_seed(1, 0), batch_seed(0, 0, rank=1),
                batch_seed(0, 0, attempt=1)}) == 4


def test_synthesis_lowers_teacher_ce_on_its_labels(make_vit):
    vit = make_vit(seed=2)
    vit.head.weight.data.mul_(30)  # a random-init head is almost input independent
    res = synth(vit, iters=30).synthesize(8, 8, seed=0)
    start = synth(vit, method='noise').synthesize(8, 8, seed=0)  # same noise, same labels
    assert start.targets == res.targets
    labels = torch.tensor(res.targets)
    with torch.no_grad():
        ce_start = F.cross_entropy(vit(start.images), labels).item()
        ce_end = F.cross_entropy(vit(res.images), labels).item()
    assert ce_end < 0.75 * ce_start, (ce_start, ce_end)


class NaNPrior(ClassificationPrior):
    """Returns NaN for the batches (counted from 1, retries included) that ``bad`` picks."""

    def __init__(self, bad):
        super().__init__(10)
        self.bad, self.samples = bad, 0

    def sample(self, batch_size, generator):
        self.samples += 1
        return super().sample(batch_size, generator)

    def loss(self, model, x, targets):
        loss = super().loss(model, x, targets)
        return loss * float('nan') if self.bad(self.samples) else loss


def test_non_finite_batch_is_regenerated(make_vit):
    prior = NaNPrior(bad=lambda n: n == 1)
    res = synth(make_vit(), prior=prior, iters=12, max_retries=2).synthesize(2, 2, seed=0)
    assert prior.samples == 2  # discarded once, regenerated once
    assert torch.isfinite(res.images).all()
    assert all(v == v for v in res.losses.values())  # no NaN kept
    clean = synth(make_vit(), iters=12).synthesize(2, 2, seed=0)
    assert not torch.equal(res.images, clean.images)  # the retry used a fresh draw


def test_permanently_non_finite_prior_raises(make_vit):
    prior = NaNPrior(bad=lambda n: n > 1)  # batch 0 fine, batch 1 never
    with pytest.raises(RuntimeError, match=r'batch 1 \(seed=5.*3 attempts.*sem'):
        synth(make_vit(), prior=prior, iters=12, max_retries=2).synthesize(4, 2, seed=5)
    assert prior.samples == 4


def test_models_frozen_and_restored(make_vit):
    teacher, student = make_vit(seed=0), make_vit(seed=1)
    teacher.train()
    student.train()
    student.head.weight.requires_grad_(False)
    before = copy.deepcopy(teacher.state_dict())
    synth(teacher, student=student).synthesize(2, 2, seed=0)
    assert teacher.training and all(m.training for m in teacher.modules())
    assert student.training and not student.head.weight.requires_grad
    assert all(p.requires_grad for n, p in student.named_parameters() if n != 'head.weight')
    assert all(p.grad is None for p in [*teacher.parameters(), *student.parameters()])
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_argument_errors_name_the_value(make_vit):
    with pytest.raises(ValueError, match="'dream'"):
        synth(make_vit(), method='dream')
    with pytest.raises(ValueError, match='mad2'):
        synth(make_vit(), loss_weights=dict(mad2=1.0))
    with pytest.raises(ValueError, match=r'\(3, 32\)'):
        synth(make_vit(), input_size=(3, 32))


@pytest.mark.parametrize('module', ['maskaq_plugin.synthesis.synthesizer',
                                    'maskaq_plugin.synthesis.priors.classification'])
def test_docstring_examples_run(module):
    import doctest
    import importlib
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
