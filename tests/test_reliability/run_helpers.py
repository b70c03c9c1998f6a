"""Helpers of the reliability tests: tiny digit-scene runs of tools/train.py, killed and
resumed as a user's run would be (subprocesses, CPU, one thread each).

A uniquely named module (not ``conftest``): several test folders have a conftest.py.
"""
import hashlib
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET = osp.join(ROOT, 'configs/mmdet/maskaq_maskrcnn_swin-tiny_digits_w4a8.py')
TEACHER = osp.join(ROOT, 'checkpoints/maskrcnn_swin-tiny_digits.pth')
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def need_teacher():
    if not osp.isfile(TEACHER):  # reported as a skip, never as a pass
        pytest.skip(f'{TEACHER} is not shipped yet: run tools/train_fp_models.py')


def tiny_config(path, scenes, *, epochs, num_samples, batch=2):
    """Write a config: the digits Mask R-CNN W4A8 with a seconds-long schedule, synthesis
    of 2 iterations, one shard per ``batch`` images, no refresh, no export."""
    ann = f'{scenes}/coco/annotations/instances_val.json'
    text = f'''_base_ = [{DET!r}]
model = dict(teacher_checkpoint={TEACHER!r})
train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
param_scheduler = [dict(type='CosineAnnealingLR', T_max={epochs}, eta_min_ratio=0.01,
                        by_epoch=True, begin=0, end={epochs}, convert_to_iter_based=True)]
train_dataloader = dict(batch_size={batch}, dataset=dict(num_samples={num_samples}))
val_dataloader = dict(batch_size=4, dataset=dict(data_root={scenes + '/'!r}))
val_evaluator = dict(ann_file={ann!r}, metric=['bbox'])
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=1, max_keep_ckpts=3))
custom_hooks = [dict(type='SampleRefreshHook', interval=0, batch_size={batch},
                     bootstrap_iters=2,
                     synthesis=dict(method='maskaq', iters=2, lr=0.1,
                                    loss_weights=dict(head=1.0, sem=1.0, tv=2.5e-5,
                                                      ent=1.0, mad=0.1)))]
'''
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def train(args, timeout=300):
    """Run ``tools/train.py ARGS`` to the end; return (returncode, stdout+stderr)."""
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), *args],
                          cwd=ROOT, env=ENV, timeout=timeout, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    return proc.returncode, proc.stdout


def start(cmd, log_path, **env):
    """Start ``cmd`` in a new session (its process group can be killed as a whole),
    output to ``log_path`` (a pipe nobody reads while polling could fill and block it)."""
    with open(log_path, 'w') as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=dict(ENV, **env), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
