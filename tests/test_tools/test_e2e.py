"""End to end through tools/, as a user runs them (subprocesses, tiny configs, CPU).

* detection: train 3 epochs, killed after the first refresh and resumed with
  ``--resume``; then ``tools/test.py`` and the OpenVINO runtime on the exported backbone;
* segmentation: train, test, exports (the whole UperNet exports too);
* two processes: ``tools/dist_train.sh`` (torchrun, gloo on CPU).

The teachers are the shipped ``checkpoints/*.pth``; validation uses 4 generated scenes.
"""
import glob
import hashlib
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import maskaq_plugin.utils  # noqa: F401  (weights-only loading of MMEngine checkpoints)
from maskaq_plugin.datasets import digit_scenes
from .conftest import ROOT, load_tool, run_tool

pytestmark = pytest.mark.e2e

DET = 'configs/mmdet/maskaq_maskrcnn_swin-tiny_digits_w4a8.py'
SEG = 'configs/mmseg/maskaq_upernet_swin-tiny_digits_w4a8.py'
BATCH = 2


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('scenes'))
    digit_scenes.generate(root, num_train=1, num_val=4, size=128, seed=0, progress=False)
    return root


def small(epochs, data_root, task, refresh=1, keep_rounds=1):
    """--cfg-options of a few-second run on ``data_root``."""
    opts = [
        f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
        f'param_scheduler.0.T_max={epochs}', f'param_scheduler.0.end={epochs}',
        f'train_dataloader.batch_size={BATCH}', f'train_dataloader.dataset.num_samples={2 * BATCH}',
        f'custom_hooks.0.interval={refresh}', f'custom_hooks.0.batch_size={BATCH}',
        f'custom_hooks.0.keep_rounds={keep_rounds}', 'custom_hooks.0.synthesis.iters=2',
        'custom_hooks.0.bootstrap_iters=2', 'default_hooks.logger.interval=1',
        f'val_dataloader.dataset.data_root={data_root}/',
        f'test_dataloader.dataset.data_root={data_root}/',
        'val_dataloader.batch_size=4', 'test_dataloader.batch_size=4',
    ]
    if task == 'det':
        ann = f'{data_root}/coco/annotations/instances_val.json'
        opts += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    return opts


def _teacher(config):
    from mmengine.config import Config
    path = Config.fromfile(osp.join(ROOT, config)).model.teacher_checkpoint
    if not osp.isfile(osp.join(ROOT, path)):  # reported as a skip, never as a pass
        pytest.skip(f'{path} is not shipped yet: run tools/train_fp_models.py')


def _sha(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def _epoch_lines(log):
    return [int(m) for m in re.findall(r'Epoch\(train\)\s+\[(\d+)\]', log)]


@pytest.fixture(scope='module')
def det_run(tmp_path_factory, scenes):
    """Killed after epoch 1 (first refresh done), resumed to epoch 3: (work_dir, logs)."""
    _teacher(DET)
    work = str(tmp_path_factory.mktemp('det'))
    cmd = [sys.executable, 'tools/train.py', DET, '--work-dir', work, '--cfg-options',
           *small(3, scenes, 'det', keep_rounds=2)]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    deadline = time.time() + 600
    ckpt1 = osp.join(work, 'epoch_1.pth')
    pointer = osp.join(work, 'last_checkpoint')  # written once epoch_1.pth is complete
    while not osp.exists(pointer) and first.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # the process group: dataloader workers too
    log1 = first.communicate()[0]
    assert osp.exists(ckpt1), f'no epoch_1.pth before the kill:\n{log1[-6000:]}'
    assert not osp.exists(osp.join(work, 'epoch_3.pth')), 'finished before the kill'
    round1 = osp.join(work, 'sample_bank', 'round_1', 'manifest.json')
    sha1 = _sha(round1)
    meta1 = torch.load(ckpt1)['meta']  # max_keep_ckpts=2 deletes it during the resume
    with open(pointer) as f:
        last = f.read().strip()
    assert last == ckpt1  # killed after the first refresh, before epoch 2's checkpoint
    log2 = run_tool(['tools/train.py', DET, '--work-dir', work, '--resume',  # latest
                     '--cfg-options', *small(3, scenes, 'det', keep_rounds=2)])
    return dict(work=work, log1=log1, log2=log2, sha1=sha1, round1=round1, meta1=meta1)


def test_det_resume_continues_without_resynthesis(det_run):
    log2, work = det_run['log2'], det_run['work']
    assert 'resumed: reusing sample bank round 1' in log2
    for fresh in ('round 0, bootstrap', 'calibrated the student quantizer ranges',
                  'sample bank round 0', 'sample bank round 1:', 'differs from the one'):
        assert fresh not in log2, fresh
    assert 'sample bank round 2:' in log2  # the refresh after epoch 2 still happens
    assert _sha(det_run['round1']) == det_run['sha1']  # round 1 untouched
    assert min(_epoch_lines(log2)) == 2 and max(_epoch_lines(log2)) == 3
    meta = torch.load(osp.join(work, 'epoch_3.pth'))['meta']
    iters_per_epoch = 2  # num_samples / batch
    assert meta['epoch'] == 3 and meta['iter'] == 3 * iters_per_epoch
    assert meta['maskaq_sample_bank']['refresh_round'] == 2
    assert det_run['meta1']['maskaq_sample_bank'] == dict(
        refresh_round=1, manifest_sha256=det_run['sha1'])


def test_det_train_reports_ap_and_exports(det_run):
    work, log2 = det_run['work'], det_run['log2']
    assert re.search(r'coco/bbox_mAP: [-\d.]+', log2)
    for name in ('quantized_student.pth', 'backbone.onnx', 'backbone.xml', 'backbone.bin'):
        assert osp.isfile(osp.join(work, name)), name
    assert 'whole-model onnx export skipped (MaskRCNN)' in log2
    state = torch.load(osp.join(work, 'quantized_student.pth'), weights_only=True)
    assert state['meta']['w_bits'] == 4 and state['meta']['a_bits'] == 8
    assert not any(k.startswith('teacher') for k in state['state_dict'])


def test_det_test_tool_computes_ap(det_run, scenes):
    out = run_tool(['tools/test.py', DET, osp.join(det_run['work'], 'epoch_3.pth'),
                    '--work-dir', osp.join(det_run['work'], 'test'), '--cfg-options',
                    *small(3, scenes, 'det')])
    ap = float(re.search(r'coco/bbox_mAP: ([-\d.]+)', out).group(1))
    assert 0.0 <= ap <= 1.0


def test_openvino_backbone_matches_fake_quant_student(det_run):
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.runner import load_checkpoint

    from maskaq_plugin.quant.export import compile_openvino, relative_error
    cfg = Config.fromfile(osp.join(ROOT, DET))
    cfg.model.update(teacher_checkpoint=None, allow_random_teacher=True)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        algo = MODELS.build(cfg.model).eval()
    load_checkpoint(algo, osp.join(det_run['work'], 'epoch_3.pth'), map_location='cpu')
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = [f.numpy() for f in algo.student.backbone(x)]
    compiled = compile_openvino(osp.join(det_run['work'], 'backbone.xml'))
    errs = []
    for i in range(2):  # the IR was traced with batch 1
        out = compiled([x[i:i + 1].numpy()])
        errs.append(relative_error([out[o] for o in compiled.outputs],
                                   [r[i:i + 1] for r in ref]))
    print(f'OpenVINO vs fake-quant student, relative L2 error per image: {errs}')
    assert max(errs) < 5e-2


def test_seg_train_test_export(tmp_path, scenes):
    _teacher(SEG)
    work = str(tmp_path / 'seg')
    log = run_tool(['tools/train.py', SEG, '--work-dir', work, '--cfg-options',
                    *small(1, scenes, 'seg')])
    assert re.search(r'mIoU: [\d.]+', log)
    for name in ('quantized_student.pth', 'backbone.onnx', 'backbone.xml', 'model.xml'):
        assert osp.isfile(osp.join(work, name)), name
    # ONNX cannot express UperNet's adaptive pooling to 3x3 / 6x6 of a 4x4 map.
    assert 'whole-model onnx export skipped (EncoderDecoder)' in log
    out = run_tool(['tools/test.py', SEG, osp.join(work, 'epoch_1.pth'), '--work-dir',
                    osp.join(work, 'test'), '--cfg-options', *small(1, scenes, 'seg')])
    miou = float(re.search(r'mIoU: ([\d.]+)', out).group(1))
    assert 0.0 <= miou <= 100.0


def test_two_processes_gloo(tmp_path, scenes):
    _teacher(DET)
    work = str(tmp_path / 'dist')
    env = dict(os.environ, PYTHON=sys.executable, PORT='29541')
    proc = subprocess.run(['bash', 'tools/dist_train.sh', DET, '2', '--work-dir', work,
                           '--cfg-options', *small(1, scenes, 'det')],
                          cwd=ROOT, env=env, timeout=600, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    log = proc.stdout
    assert proc.returncode == 0, log[-6000:]
    assert "dist_cfg: {'backend': 'gloo'}" in log
    assert re.search(r'coco/bbox_mAP: [-\d.]+', log)
    manifest = json.load(open(osp.join(work, 'sample_bank', 'round_0', 'manifest.json')))
    assert sorted({s['rank'] for s in manifest['shards']}) == [0, 1]  # a shard per rank
    assert osp.isfile(osp.join(work, 'quantized_student.pth'))


def test_synthesize_tool_writes_bank_and_previews(tmp_path):
    _teacher(DET)
    out = str(tmp_path / 'synth')
    run_tool(['tools/synthesize.py', DET, '--out', out, '--num-samples', '4', '--preview',
              '3', '--cfg-options', 'custom_hooks.0.synthesis.iters=2',
              'custom_hooks.0.bootstrap_iters=2', f'custom_hooks.0.batch_size={BATCH}'])
    manifest = json.load(open(osp.join(out, 'sample_bank', 'round_0', 'manifest.json')))
    assert manifest['num_images'] == 4
    previews = sorted(glob.glob(osp.join(out, 'previews', '*.png')))
    assert len(previews) == 3
    import cv2
    img = cv2.imread(previews[0])
    assert img.shape == (128, 256, 3)
    left, right = img[:, :128].astype(int), img[:, 128:].astype(int)
    tinted = np.abs(left - right).sum(-1) > 0
    assert 0.02 < tinted.mean() < 0.5  # the informative region (10 % of keys, + boxes)
