"""One Stage 1: ``quantize_data_free`` and ``tools/train.py`` synthesise the same round 0.

Both entry points run :class:`~maskaq_plugin.synthesis.rounds.RoundService`: on the same
FP classifier (a tiny mmpretrain ViT ``ImageClassifier``, handed whole to the API), seed
and split of the round (num_samples, batch_size, bootstrap on every round-0 image), the
round-0 images the API trains on are bitwise those that the Runner's
``SampleRefreshHook`` writes to the bank; and the loss terms of the Runner's first QAT
step equal those of the API's Stage 2 loss
(:func:`~maskaq_plugin.qat.classification_terms` on ``distill_losses_for('cls',
'maskaq')``) on that step's batch, teacher and student.
"""
import copy
import os.path as osp
import sys

import pytest
import torch

import maskaq_plugin.api as api
from maskaq_plugin import quantize_data_free
from maskaq_plugin.models import MaskAQAlgorithm
from maskaq_plugin.models.architecture import preprocessor_norm
from maskaq_plugin.qat import QATDistiller, classification_terms, distill_losses_for
from maskaq_plugin.synthesis.bank import SampleBank

TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, TESTS)
sys.path.insert(0, osp.join(TESTS, 'test_models'))
import tiny_archs  # noqa: E402
from tools_loader import load_tool  # noqa: E402

pytest.importorskip('mmpretrain')

SEED, NUM, BATCH, ITERS, IMG = 3, 4, 2, 2, (3, 64, 64)


def _config(path, arch, checkpoint, work_dir):
    hook = dict(type='SampleRefreshHook', interval=0, batch_size=BATCH,
                bootstrap_samples=NUM, synthesis=dict(method='maskaq', iters=ITERS))
    cfg = dict(
        custom_imports=dict(imports=['maskaq_plugin'], allow_failed_imports=False),
        default_scope='mmpretrain', work_dir=str(work_dir), randomness=dict(seed=SEED),
        model=dict(type='MaskAQAlgorithm', architecture=arch, teacher_checkpoint=checkpoint,
                   w_bits=4, a_bits=8, input_size=IMG),
        train_dataloader=dict(batch_size=BATCH, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              dataset=dict(type='MaskAQSyntheticDataset', task='cls',
                                           num_samples=NUM)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-3, momentum=0.9)),
        custom_hooks=[hook], log_level='WARNING')
    with open(path, 'w') as f:
        f.write('\n'.join(f'{key} = {value!r}' for key, value in cfg.items()) + '\n')
    return str(path)


def test_api_and_train_tool_synthesise_the_same_round0(tmp_path, monkeypatch):
    from mmengine.registry import MODELS
    arch = tiny_archs.deit_tiny_cls().to_dict()
    torch.manual_seed(0)
    fp = MODELS.build(copy.deepcopy(arch)).eval()
    checkpoint = str(tmp_path / 'fp.pth')
    torch.save(dict(state_dict=fp.state_dict()), checkpoint)

    # tools/train.py: round 0 in the bank (no refresh: interval=0); its first QAT step's
    # batch, models (before the update) and RNG state are kept
    first = {}
    loss = MaskAQAlgorithm.loss

    def recording_loss(self, inputs, data_samples=None):
        if not first:
            first.update(inputs=inputs.detach().clone(), rng=torch.get_rng_state(),
                         teacher=copy.deepcopy(self.teacher), student=copy.deepcopy(self.student))
        terms = loss(self, inputs, data_samples)
        first.setdefault('terms', {k: v.detach().clone() for k, v in terms.items()})
        return terms

    monkeypatch.setattr(MaskAQAlgorithm, 'loss', recording_loss)
    work = tmp_path / 'work'
    load_tool('train').main([_config(tmp_path / 'cfg.py', arch, checkpoint, work),
                             '--device', 'cpu'])
    bank = SampleBank(str(work / 'sample_bank'))
    assert bank.rounds() == [0]
    runner_images = bank.load_round(0)['images']
    monkeypatch.setattr(MaskAQAlgorithm, 'loss', loss)

    # the API's Stage 2 loss on the Runner's first batch: the same terms
    torch.set_rng_state(first['rng'])
    api_terms = classification_terms(QATDistiller(distill_losses_for('cls', 'maskaq')),
                                     first['teacher'], first['student'], first['inputs'])
    assert set(first['terms']) == {f'distill.loss_{k}' for k in api_terms} == {
        'distill.loss_task', 'distill.loss_mssim'}
    for k, v in api_terms.items():
        assert torch.isfinite(v) and v > 0
        torch.testing.assert_close(v.detach(), first['terms'][f'distill.loss_{k}'],
                                   rtol=0, atol=1e-6)

    # quantize_data_free on the same classifier: the images its QAT receives
    seen = []
    monkeypatch.setattr(api, 'run_classification_qat',
                        lambda teacher, student, images, **kw: seen.append(images))
    norm = preprocessor_norm(fp.data_preprocessor)  # as the algorithm reads it
    quantize_data_free(fp, input_size=IMG, num_classes=5, w_bits=4, a_bits=8,
                       mean=[m / 255.0 for m in norm['mean']],
                       std=[s / 255.0 for s in norm['std']], num_samples=NUM,
                       synthesis_iters=ITERS, batch_size=BATCH, epochs=1, seed=SEED,
                       progress=False)
    assert runner_images.shape == (NUM, *IMG) and len(seen) == 1
    assert torch.equal(seen[0], runner_images)
