"""Two processes (torchrun, gloo on CPU): a rank that dies or hangs fails the whole run
within seconds, never a 30-minute hang, and ``--resume`` then completes it.

Measured on this stack (torch 2.14.1 torchrun, mmengine 0.10.7):

* a SIGKILLed rank is seen by torchrun's elastic agent in about 1 s; it sends SIGTERM to
  the other ranks and exits 1 (``ChildFailedError``, root cause ``exitcode: -9``);
* a hung rank is not seen by torchrun: the other ranks wait in their next collective for
  ``env_cfg.dist_cfg.timeout`` seconds (gloo: ``Timed out waiting ...ms for recv``), then
  exit 1, and torchrun stops the hung rank (SIGTERM; SIGKILL 30 s later if ignored).
"""
import os
import os.path as osp
import re
import signal
import socket
import sys
import time

import pytest
import torch

import maskaq_plugin.utils  # noqa: F401  (weights-only loading of MMEngine checkpoints)
from run_helpers import ROOT, need_teacher, start, tiny_config

pytestmark = pytest.mark.e2e


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _torchrun(*args):
    return [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
            f'--master_port={_free_port()}', *args]


def _workers(agent_pid):
    """{rank: pid} of the worker processes torchrun started."""
    pids = []
    for tid in os.listdir(f'/proc/{agent_pid}/task'):
        with open(f'/proc/{agent_pid}/task/{tid}/children') as f:
            pids += [int(p) for p in f.read().split()]
    ranks = {}
    for pid in pids:
        with open(f'/proc/{pid}/environ', 'rb') as f:
            env = dict(e.split(b'=', 1) for e in f.read().split(b'\0') if b'=' in e)
        ranks[int(env[b'RANK'])] = pid
    return ranks


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def _wait_or_kill(proc, timeout):
    """Return code of ``proc``; kill its whole process group if it outlives ``timeout``."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:  # a hang: leave no process behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_hung_rank_times_out_after_dist_cfg_timeout(tmp_path):
    worker = osp.join(osp.dirname(osp.abspath(__file__)), 'dist_hang_worker.py')
    start_time = time.time()
    agent = start(_torchrun(worker, '3'), tmp_path / 'hang.log', PYTHONPATH=ROOT)
    rc = _wait_or_kill(agent, 120)
    elapsed = time.time() - start_time
    log = open(tmp_path / 'hang.log').read()
    assert rc == 1, log[-4000:]
    assert 'Timed out waiting 3000ms' in log, log[-4000:]
    waited = float(re.search(r'rank 0 left the barrier after ([\d.]+) s', log).group(1))
    assert 2.5 <= waited < 15  # the configured 3 s, not the default 1800 s
    assert elapsed < 60, elapsed  # the sleeping rank 1 was stopped by torchrun


def test_sigkilled_rank_fails_the_run_and_resume_completes_it(tmp_path, scenes):
    need_teacher()
    cfg = tiny_config(tmp_path / 'cfg.py', scenes, epochs=3, num_samples=4)
    work = str(tmp_path / 'work')
    train = ['tools/train.py', cfg, '--launcher', 'pytorch', '--work-dir', work]
    # A surviving rank would give up after 60 s on its own: teardown within 30 s below
    # is torchrun's doing.
    timeout = ['--cfg-options', 'env_cfg.dist_cfg.timeout=60']
    agent = start(_torchrun(*train, *timeout), tmp_path / 'first.log')
    pointer = osp.join(work, 'last_checkpoint')  # written once epoch_1.pth is complete
    deadline = time.time() + 300
    while not osp.exists(pointer) and agent.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert agent.poll() is None, open(tmp_path / 'first.log').read()[-4000:]
    ranks = _workers(agent.pid)
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[1], signal.SIGKILL)
    killed = time.time()
    rc = _wait_or_kill(agent, 120)
    teardown = time.time() - killed
    log1 = open(tmp_path / 'first.log').read()
    assert rc != 0 and not osp.exists(osp.join(work, 'epoch_3.pth')), log1[-4000:]
    assert teardown < 30, teardown
    assert not _alive(ranks[0])  # the surviving rank was stopped, it did not hang
    assert re.search(r'rank\s+: 1 .*\n.*exitcode\s+: -9', log1), log1[-3000:]
    print(f'torchrun exited {rc} {teardown:.1f} s after rank 1 was SIGKILLed')

    agent = start(_torchrun(*train, '--resume', *timeout), tmp_path / 'resume.log')
    rc = _wait_or_kill(agent, 300)
    log2 = open(tmp_path / 'resume.log').read()
    assert rc == 0, log2[-6000:]
    assert 'resumed: reusing sample bank round 0' in log2
    assert 'round 0, bootstrap' not in log2  # no re-synthesis, no recalibration
    assert not re.search(r'Epoch\(train\)\s+\[1\]', log2)  # epoch 1 is not trained again
    assert re.search(r'coco/bbox_mAP: [\d.]+', log2)
    meta = torch.load(osp.join(work, 'epoch_3.pth'))['meta']
    assert meta['epoch'] == 3 and meta['iter'] == 3  # 4 images, 2 ranks x batch 2
