"""MaskAQAlgorithm on tiny real mmdet / mmseg / mmpretrain models (CPU)."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS, DefaultScope

import maskaq_plugin  # noqa: F401
import tiny_archs
from maskaq_plugin.models import MaskAQAlgorithm, NonFiniteLossError
from maskaq_plugin.quant.inspect import iter_quantizers
from maskaq_plugin.synthesis.priors import (ClassificationPrior, DetectionPrior,
                                            SegmentationPrior)

ARCHS = dict(mask_rcnn=tiny_archs.mask_rcnn_swin, retinanet=tiny_archs.retinanet_pvtv2,
             upernet=tiny_archs.upernet_swin, vit=tiny_archs.deit_tiny_cls)


def _fp_checkpoint(tmp_path_factory, name):
    torch.manual_seed(1)
    fp = MODELS.build(ARCHS[name]())
    path = str(tmp_path_factory.mktemp(name) / 'fp.pth')
    torch.save(dict(state_dict=fp.state_dict(), meta=dict(note='fp')), path)
    return path, fp


def _algo(name, ckpt=None, **kwargs):
    cfg = dict(type='MaskAQAlgorithm', architecture=ARCHS[name](), w_bits=4, a_bits=8,
               input_size=(3, 64, 64), teacher_checkpoint=ckpt,
               allow_random_teacher=ckpt is None)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _optimizer_state(model):
    """What an optimizer step may move: every parameter and buffer except the NNCF
    quantizers' non-learned state (``recipe='lsq'`` weight quantizers refresh their
    per-channel range from the current weights on every forward)."""
    params = {n: p for n, p in model.named_parameters()
              if p.requires_grad or '__nncf_hooks' not in n}
    params.update((n, b) for n, b in model.named_buffers() if '__nncf_hooks' not in n)
    return {n: v.detach().clone() for n, v in params.items()}


def _batch(algo, n=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 64, 64, generator=gen)
    if algo.task == 'cls':
        from mmpretrain.structures import DataSample
        return x, [DataSample(metainfo=dict(img_shape=(64, 64))).set_gt_label(0)
                   for _ in range(n)]
    return x, algo.synthesis_prior().sample(n, gen)


@pytest.fixture(scope='module')
def mask_rcnn(tmp_path_factory):
    path, fp = _fp_checkpoint(tmp_path_factory, 'mask_rcnn')
    return _algo('mask_rcnn', path), fp, path


def test_teacher_and_student_load_the_checkpoint(mask_rcnn):
    algo, fp, _ = mask_rcnn
    ref = fp.state_dict()
    for k, v in algo.teacher.state_dict().items():
        assert torch.equal(v, ref[k]), k
    student = algo.student.state_dict()
    for k, v in ref.items():  # quantizer entries are extra; every FP weight is there
        assert torch.equal(student[k], v), k
    assert any('__nncf_hooks' in k for k in student)
    algo.init_weights()  # the Runner calls it after before_run: must not re-initialise
    assert all(torch.equal(v, ref[k]) for k, v in algo.teacher.state_dict().items())
    assert torch.equal(algo.student.state_dict()['roi_head.bbox_head.fc_cls.weight'],
                       ref['roi_head.bbox_head.fc_cls.weight'])


def test_only_student_backbone_trains_and_every_module_stays_eval(mask_rcnn):
    algo, _, _ = mask_rcnn
    trainable = [n for n, p in algo.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith('student.backbone.') for n in trainable)
    assert any('__nncf_hooks' in n for n in trainable)  # quantizer ranges learn
    for mode in (True, False, True):
        algo.train(mode)
        assert algo.training is mode  # MMEngine reads it
        assert not any(m.training for m in algo.teacher.modules())
        assert not any(m.training for m in algo.student.modules())
    assert algo.student_backbone_quantized is algo.student.backbone
    assert algo.quantize_head is False and algo.head_scheme is None
    assert [n for n, _ in algo.quantized_modules()] == ['backbone']
    names = [n for n, _ in iter_quantizers(algo.student)]
    assert names and all(n.startswith('backbone:') for n in names)  # heads stay FP


def test_loss_keys_grads_and_optimizer_step(mask_rcnn):
    algo, _, _ = mask_rcnn
    algo.train()
    x, samples = _batch(algo)
    losses = algo(x, samples, mode='loss')
    assert set(losses) == {'distill.loss_feat', 'distill.loss_task', 'distill.loss_mssim'}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    teacher_before = copy.deepcopy(algo.teacher.state_dict())
    head_before = copy.deepcopy(algo.student.roi_head.state_dict())
    # MMEngine's default optimizer constructor passes model.parameters() (frozen ones
    # included): SGD with momentum and weight decay must still leave them untouched.
    wrapper = OptimWrapper(torch.optim.SGD(algo.parameters(), lr=0.1, momentum=0.9,
                                           weight_decay=0.1))
    bb = [p for n, p in algo.student.backbone.named_parameters()
          if n.endswith('projection.weight')][0]
    bb_before = bb.detach().clone()
    log = algo.train_step(dict(inputs=x * 58 + 120, data_samples=samples), wrapper)
    assert {'loss', 'distill.loss_task'} <= set(log)
    assert all(p.grad is None for p in algo.teacher.parameters())
    assert not torch.equal(bb, bb_before)
    for k, v in algo.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    for k, v in algo.student.roi_head.state_dict().items():
        assert torch.equal(v, head_before[k]), k


def test_predict_is_the_student(mask_rcnn):
    algo, _, _ = mask_rcnn
    algo.eval()
    x, samples = _batch(algo, n=1)
    with torch.no_grad():
        ours = algo(x, copy.deepcopy(samples), mode='predict')[0].pred_instances
        theirs = algo.student.predict(x, copy.deepcopy(samples))[0].pred_instances
        teacher = algo.teacher.predict(x, copy.deepcopy(samples))[0].pred_instances
        tensor = algo(x, samples, mode='tensor')
    torch.testing.assert_close(ours.bboxes, theirs.bboxes)
    torch.testing.assert_close(ours.scores, theirs.scores)
    assert not (len(ours.scores) == len(teacher.scores)
                and torch.allclose(ours.scores, teacher.scores))  # W4A8 differs from FP
    assert isinstance(tensor, tuple)


def test_synthesis_prior_and_fingerprint(mask_rcnn):
    algo, _, _ = mask_rcnn
    prior = algo.synthesis_prior()
    assert isinstance(prior, DetectionPrior) and prior.with_mask
    assert prior.img_shape == (64, 64) and prior.num_classes == tiny_archs.DET_CLASSES
    fp = algo.fingerprint()
    assert fp['architecture'] == 'MaskRCNN/SwinTransformer' and fp['input_size'] == [3, 64, 64]
    assert algo.norm['bgr_to_rgb'] is True and len(algo.norm['mean']) == 3


def test_checkpoint_mismatch_names_the_keys(mask_rcnn, tmp_path):
    _, fp, path = mask_rcnn
    sd = fp.state_dict()
    sd.pop('rpn_head.rpn_conv.weight')
    sd['extra.weight'] = torch.zeros(1)
    sd['roi_head.bbox_head.fc_cls.weight'] = torch.zeros(2, 2)
    bad = str(tmp_path / 'bad.pth')
    torch.save(sd, bad)
    with pytest.raises(RuntimeError) as err:
        _algo('mask_rcnn', bad)
    msg = str(err.value)
    assert 'missing keys: rpn_head.rpn_conv.weight' in msg
    assert 'unexpected keys: extra.weight' in msg
    assert 'roi_head.bbox_head.fc_cls.weight: checkpoint (2, 2)' in msg
    with pytest.raises(ValueError, match='teacher_checkpoint is None'):
        MaskAQAlgorithm(architecture=ARCHS['vit'](), input_size=(3, 64, 64))
    with pytest.raises(ValueError, match='unknown kd keys'):
        _algo('vit', kd=dict(temprature=2))
    algo = _algo('vit', kd=dict(top_ratio=0.2, w_high=1.0, mssim=0.0))
    assert algo.kd == dict(feat=0.0, task=1.0, mssim=0.0, temperature=5.0, top_ratio=0.2,
                           w_high=1.0, w_low=1.0, mask_mode='informative')
    with pytest.raises(ValueError, match="kd.mask_mode must be .* got 'randm'"):
        _algo('vit', kd=dict(mask_mode='randm'))


def test_random_mask_ablation_changes_only_the_mssim_weighting():
    informative = _algo('vit')
    random = _algo('vit', kd=dict(mask_mode='random'))
    random.load_state_dict(informative.state_dict())
    x, samples = _batch(informative)
    with torch.no_grad():
        a = informative(x, samples, mode='loss')
        torch.manual_seed(0)
        b = random(x, samples, mode='loss')
        torch.manual_seed(1)
        c = random(x, samples, mode='loss')
    assert torch.equal(a['distill.loss_task'], b['distill.loss_task'])
    assert not torch.equal(a['distill.loss_mssim'], b['distill.loss_mssim'])
    assert not torch.equal(b['distill.loss_mssim'], c['distill.loss_mssim'])  # drawn anew


@pytest.mark.parametrize('name,prior,keys', [
    ('retinanet', DetectionPrior, {'distill.loss_feat', 'distill.loss_task',
                                   'distill.loss_mssim'}),
    ('upernet', SegmentationPrior, {'distill.loss_feat', 'distill.loss_task',
                                    'distill.loss_mssim'}),
    ('vit', ClassificationPrior, {'distill.loss_task', 'distill.loss_mssim'}),
])
def test_other_tasks(name, prior, keys):
    algo = _algo(name)
    assert isinstance(algo.synthesis_prior(), prior)
    algo.train()
    x, samples = _batch(algo)
    losses = algo(x, samples, mode='loss')
    assert set(losses) == keys
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    grads = [p.grad for p in algo.student.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    if name == 'vit':
        assert algo.kd['temperature'] == 5.0 and algo.kd['feat'] == 0.0


def test_nonfinite_steps_are_skipped_counted_and_bounded():
    algo = _algo('vit', max_nonfinite_steps=3)
    algo.train()
    x, samples = _batch(algo)
    data = dict(inputs=x * 58 + 120, data_samples=samples)
    wrapper = OptimWrapper(torch.optim.SGD(algo.parameters(), lr=0.1, momentum=0.9,
                                           weight_decay=0.1))
    algo.train_step(data, wrapper)  # finite: builds momentum buffers
    before = _optimizer_state(algo.student)

    def poison():  # the task term becomes NaN (connected to the student's graph)
        algo._task_loss = lambda x_t, x_s, samples: x_s[0].sum() * float('nan')

    poison()
    for i in (1, 2):
        log = algo.train_step(data, wrapper)
        assert float(log['distill.nonfinite_steps']) == i and float(log['loss']) == 0
        for k, v in _optimizer_state(algo.student).items():  # momentum/decay did not
            assert torch.equal(v, before[k]), k  # move it
    del algo._task_loss  # finite again: the streak resets
    algo.train_step(data, wrapper)
    assert algo.nonfinite_in_row == 0 and algo.nonfinite_total == 2
    poison()
    algo.train_step(data, wrapper)
    algo.train_step(data, wrapper)
    with pytest.raises(NonFiniteLossError, match='3 QAT steps in a row'):
        algo.train_step(data, wrapper)


def test_root_registry_seen_from_host_scopes():
    for scope, name in (('mmdet', 'retinanet'), ('mmseg', 'upernet')):
        cfg = ARCHS[name]()
        cfg.pop('_scope_')  # resolved from the default scope, as inside a Runner
        with DefaultScope.overwrite_default_scope(scope):
            algo = MODELS.build(dict(type='MaskAQAlgorithm', architecture=cfg,
                                     allow_random_teacher=True, input_size=(3, 64, 64),
                                     quant=dict(quantize_attention_matmuls=False)))
        assert algo.scope == scope


def _ddp_worker(rank, world, init_file):
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    torch.set_num_threads(1)  # forked child (as DataLoader workers do)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world)
    try:
        torch.manual_seed(0)
        algo = _algo('vit')
        algo.train()
        ddp = MMDistributedDataParallel(module=algo)
        wrapper = OptimWrapper(torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9,
                                               weight_decay=0.1))
        x, samples = _batch(algo, seed=rank)
        data = dict(inputs=x * 58 + 120, data_samples=samples)
        ddp.train_step(data, wrapper)
        before = _optimizer_state(algo.student)
        trained = [p for p in algo.student.parameters() if p.requires_grad]
        start = torch.cat([p.detach().flatten() for p in trained])
        if rank == 1:  # only rank 1 sees a NaN: every rank must skip
            algo._task_loss = lambda x_t, x_s, samples: x_s[0].sum() * float('nan')
        log = ddp.train_step(data, wrapper)
        assert float(log['distill.nonfinite_steps']) == 1
        assert all(torch.equal(v, before[k])
                   for k, v in _optimizer_state(algo.student).items())
        algo.__dict__.pop('_task_loss', None)
        ddp.train_step(data, wrapper)  # DDP carries on (no pending reduction)
        flat = torch.cat([p.detach().flatten() for p in trained])
        assert not torch.equal(flat, start)
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        assert torch.equal(gathered[0], gathered[1])  # ranks stay in sync
    finally:
        dist.destroy_process_group()


def test_nonfinite_skip_is_collective_under_ddp(tmp_path):
    import torch.multiprocessing as mp
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / 'init')), nprocs=2, join=True,
                       start_method='fork')
