"""SIGKILL in the middle of a synthesis round, then a rerun: only the shard in flight is
lost, nothing unlisted or temporary is read or left behind."""
import glob
import json
import os
import os.path as osp
import re
import signal
import sys
import time

import pytest
import torch

from maskaq_plugin.synthesis.shards import RoundProgress, state_key
from maskaq_plugin.synthesis.bank import SampleBank
from run_helpers import need_teacher, sha256, start, tiny_config, train

SHARDS = 4  # num_samples 8, one shard per 2 images


def _stat(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, sha256(path)


def _leftovers(work):
    bank = osp.join(work, 'sample_bank')
    names = glob.glob(osp.join(bank, '**', '*'), recursive=True) + glob.glob(
        osp.join(bank, '**', '.*'), recursive=True)
    return [p for p in names if p.endswith('.tmp') or 'progress_r' in p]


def _run_until(cmd, log_path, done, timeout=240):
    """Start ``cmd``, SIGKILL its process group as soon as ``done()``; return its log."""
    proc = start(cmd, log_path)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline and not done():
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log = open(log_path).read()
    assert proc.returncode == -signal.SIGKILL, f'ended before the kill:\n{log[-4000:]}'
    return log


@pytest.mark.e2e
def test_sigkill_mid_round0_then_rerun_loses_only_the_shard_in_flight(tmp_path, scenes):
    need_teacher()
    cfg = tiny_config(tmp_path / 'cfg.py', scenes, epochs=1, num_samples=2 * SHARDS)
    work = str(tmp_path / 'work')
    cmd = [sys.executable, 'tools/train.py', cfg, '--work-dir', work, '--resume']
    rdir = osp.join(work, 'sample_bank', 'round_0')
    progress, manifest = osp.join(rdir, 'progress_r0.json'), osp.join(rdir, 'manifest.json')

    # 1. Killed while synthesising round 0, once one shard is recorded.
    _run_until(cmd, tmp_path / 'run1.log',
               lambda: osp.exists(progress) and json.load(open(progress))['shards'])
    assert not osp.exists(manifest)
    done = json.load(open(progress))['shards']
    on_disk = glob.glob(osp.join(rdir, 'shard_r0_*.pt'))
    assert 1 <= len(done) < SHARDS
    assert len(on_disk) - len(done) <= 1  # at most the shard in flight is unrecorded
    before = {r['file']: _stat(osp.join(rdir, r['file'])) for r in done}
    # What a kill during a write leaves: a temporary file, and a shard renamed into place
    # but not yet recorded (here with garbage): both must be ignored and removed.
    last = f'shard_r0_{SHARDS - 1}.pt'
    assert last not in before
    for name in (last, f'.{last}.k1ll3d.tmp'):
        with open(osp.join(rdir, name), 'wb') as f:
            f.write(b'PK\x03\x04 half-written garbage')

    # 2. Rerun (no checkpoint yet: round 0 again), killed once round 0 is complete,
    # before the first checkpoint.
    pointer = osp.join(work, 'last_checkpoint')
    log2 = _run_until(cmd, tmp_path / 'run2.log',
                      lambda: osp.exists(manifest) and not osp.exists(progress))
    assert not osp.exists(pointer), 'a checkpoint was written before the kill'
    assert (f'sample bank round 0: reusing {len(done)} shard(s) written before an '
            f'interruption (rank 0), synthesising {SHARDS - len(done)}') in log2
    final = json.load(open(manifest))
    assert final['num_images'] == 2 * SHARDS and len(final['shards']) == SHARDS
    for rec in final['shards']:
        assert sha256(osp.join(rdir, rec['file'])) == rec['sha256']
    for name, stat in before.items():  # reused as they were: not rewritten, not changed
        assert _stat(osp.join(rdir, name)) == stat, name
    assert b'garbage' not in open(osp.join(rdir, last), 'rb').read()  # regenerated
    assert _leftovers(work) == []
    complete = {r['file']: _stat(osp.join(rdir, r['file'])) for r in final['shards']}

    # 3. Rerun to the end: the complete round 0 is reused whole, nothing is synthesised.
    rc, log3 = train(cmd[2:])
    assert rc == 0, log3[-6000:]
    assert re.search(r'coco/bbox_mAP: [\d.]+', log3)
    assert (f'reusing {SHARDS} shard(s) written before an interruption (rank 0), '
            'synthesising 0') in log3
    assert {r['file']: _stat(osp.join(rdir, r['file']))
            for r in json.load(open(manifest))['shards']} == complete
    assert _leftovers(work) == []


def _records(bank, rank, n, k=0):
    return [bank.write_shard(k, torch.full((1, 3, 4, 4), float(i)), rank=rank, index=i)
            for i in range(n)]


def test_round_progress_reuses_only_matching_verified_shards(tmp_path):
    bank = SampleBank(str(tmp_path / 'bank'))
    rdir = bank.round_dir(0)
    jobs = [(0, i, 1) for i in range(3)]
    mine = RoundProgress(bank, 0, rank=0, key='A')
    for rec in _records(bank, 0, 3):
        mine.add(rec)
    theirs = RoundProgress(bank, 0, rank=1, key='A')
    theirs.add(_records(bank, 1, 1)[0])
    stale = RoundProgress(bank, 0, rank=2, key='A')  # a rank of a larger, earlier world
    stale.add(_records(bank, 2, 1)[0])
    with open(osp.join(rdir, 'shard_r0_1.pt'), 'r+b') as f:  # corrupt one listed shard
        f.write(b'XX')
    with open(osp.join(rdir, '.shard_r0_2.pt.abc.tmp'), 'wb') as f:
        f.write(b'partial')

    keep = RoundProgress(bank, 0, rank=0, key='A').resume(jobs, world=2, main=True)
    assert [r['file'] for r in keep] == ['shard_r0_0.pt', 'shard_r0_2.pt']
    names = sorted(os.listdir(rdir))
    assert 'shard_r0_1.pt' not in names and '.shard_r0_2.pt.abc.tmp' not in names
    assert 'shard_r2_0.pt' not in names and 'progress_r2.json' not in names  # orphans
    assert {'shard_r1_0.pt', 'progress_r1.json'} <= set(names)  # rank 1 decides for itself

    # Another state (e.g. the student trained further): nothing of this rank is reused.
    assert RoundProgress(bank, 0, rank=0, key='B').resume(jobs, world=2, main=False) == []
    assert sorted(os.listdir(rdir)) == ['progress_r1.json', 'shard_r1_0.pt']

    # A complete round whose manifest carries the same key (killed before a checkpoint).
    bank.commit_round(1, _records(bank, 0, 2, k=1), seed=0, extra=dict(state_key='C'))
    jobs = [(0, 0, 1), (0, 1, 1)]
    progress = RoundProgress(bank, 1, rank=0, key='C')
    progress.collect()  # then a barrier: the main rank deletes the manifest in resume()
    assert [r['file'] for r in progress.resume(jobs, world=1, main=True)] == [
        'shard_r0_0.pt', 'shard_r0_1.pt']
    assert bank.rounds() == []  # the manifest is rewritten when the round is committed
    assert RoundProgress(bank, 1, rank=0, key='D').resume(jobs, world=1, main=True) == []
    assert os.listdir(bank.round_dir(1)) == []


def test_state_key_covers_weights_and_quantizer_ranges():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    key = state_key(model, round=0, seed=0)
    assert key == state_key(model, round=0, seed=0)
    assert key != state_key(model, round=1, seed=0)
    with torch.no_grad():
        model[0].weight[0, 0] += 1e-6  # a trained weight or quantizer scale (parameter)
    changed = state_key(model, round=0, seed=0)
    assert changed != key
    with torch.no_grad():
        model[1].running_mean[0] += 1e-6  # a buffer (NNCF keeps bits / signedness so)
    assert state_key(model, round=0, seed=0) != changed
