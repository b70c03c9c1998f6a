"""SampleBank: atomic shards, manifest written last, hashes, fingerprints, ranks."""
import json
import os
import os.path as osp

import pytest
import torch
import torch.multiprocessing as mp

from maskaq_plugin.synthesis.bank import (BankMismatchError, SampleBank, model_fingerprint,
                                          shard_name)

FP = model_fingerprint('MaskRCNN/SwinTransformer', (3, 8, 8), [1, 2, 3], [4, 5, 6], True, 'det')


def test_docstring_examples():
    import doctest

    from maskaq_plugin.synthesis import bank
    result = doctest.testmod(bank)
    assert result.attempted > 0 and result.failed == 0


def _images(seed, n=3):
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _write(bank, k, shards=2, seed=0):
    recs = [bank.write_shard(k, _images(seed + i), rank=0, index=i,
                             targets=[dict(bboxes=torch.zeros(1, 4), labels=torch.ones(1).long())]
                             * 3, meta=dict(seed=seed + i)) for i in range(shards)]
    return bank.commit_round(k, recs, seed=seed, extra=dict(norm=dict(mean=[0] * 3)))


def test_round_trip_and_manifest(tmp_path):
    bank = SampleBank(str(tmp_path / 'bank'), fingerprint=FP)
    assert bank.latest_round() is None and bank.rounds() == []
    manifest = _write(bank, 0)
    assert bank.latest_round() == 0
    assert manifest['num_images'] == 6 and manifest['input_size'] == [3, 8, 8]
    assert manifest['fingerprint'] == FP and manifest['round'] == 0 and manifest['seed'] == 0
    assert [s['file'] for s in manifest['shards']] == [shard_name(0, 0), shard_name(0, 1)]
    on_disk = json.load(open(bank.manifest_path(0)))
    assert on_disk['shards'] == manifest['shards']
    data = bank.load_round(0)
    torch.testing.assert_close(data['images'], torch.cat([_images(0), _images(1)]), rtol=0, atol=0)
    assert len(data['targets']) == 6 and data['skipped'] == []
    # shards hold plain types only: weights_only loading works
    shard = torch.load(osp.join(bank.round_dir(0), shard_name(0, 1)), weights_only=True)
    assert shard['meta'] == dict(seed=1, round=0, rank=0, index=1)
    # no temporary files left behind
    assert sorted(os.listdir(bank.round_dir(0))) == ['manifest.json', shard_name(0, 0),
                                                     shard_name(0, 1)]


def test_round_without_manifest_is_not_trusted(tmp_path):
    bank = SampleBank(str(tmp_path))
    _write(bank, 0)
    bank.write_shard(1, _images(5), rank=0, index=0)  # crashed before the manifest
    assert bank.rounds() == [0] and bank.latest_round() == 0
    with pytest.raises(FileNotFoundError, match='round 1 has no manifest'):
        bank.load_round(1)


def test_corrupt_shard_is_missing_never_read(tmp_path):
    bank = SampleBank(str(tmp_path))
    _write(bank, 0)
    path = osp.join(bank.round_dir(0), shard_name(0, 1))
    with open(path, 'r+b') as f:  # flip one byte
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    reader = SampleBank(str(tmp_path))  # a fresh process: nothing verified yet
    assert [r['file'] for r in reader.verify_round(0)] == [shard_name(0, 1)]
    with pytest.raises(RuntimeError, match='does not match its sha256'):
        reader.load_round(0)
    data = reader.load_round(0, skip_bad=True)
    assert data['skipped'] == [shard_name(0, 1)]
    torch.testing.assert_close(data['images'], _images(0))
    os.remove(osp.join(bank.round_dir(0), shard_name(0, 0)))
    assert len(reader.verify_round(0)) == 2  # missing counts as bad too
    # the writer regenerates the bad shard: a new manifest lists the new hash
    recs = [reader.write_shard(0, _images(i), rank=0, index=i) for i in range(2)]
    reader.commit_round(0, recs, seed=0)
    assert SampleBank(str(tmp_path)).verify_round(0) == []


def test_fingerprint_mismatch_names_both(tmp_path):
    _write(SampleBank(str(tmp_path), fingerprint=FP), 0)
    other = model_fingerprint('EncoderDecoder/SwinTransformer', (3, 16, 16), [1, 2, 3],
                              [4, 5, 6], True, 'seg')
    with pytest.raises(BankMismatchError) as err:
        SampleBank(str(tmp_path), fingerprint=other).load_round(0)
    msg = str(err.value)
    assert 'MaskRCNN/SwinTransformer@3x8x8' in msg
    assert 'EncoderDecoder/SwinTransformer@3x16x16' in msg
    assert SampleBank(str(tmp_path)).load_round(0)['images'].shape[0] == 6  # no check


def test_fingerprint_covers_normalisation():
    a = model_fingerprint('A/B', (3, 8, 8), [1, 2, 3], [4, 5, 6], True, 'det')
    b = model_fingerprint('A/B', (3, 8, 8), [1, 2, 3], [4, 5, 6], False, 'det')
    c = model_fingerprint('A/B', (3, 8, 8), [1, 2, 3.5], [4, 5, 6], True, 'det')
    assert a != b and a != c and a == model_fingerprint('A/B', [3, 8, 8], (1., 2., 3.),
                                                        (4, 5, 6), True, 'det')
    json.dumps(a)  # plain types


def test_prune_keeps_newest(tmp_path):
    bank = SampleBank(str(tmp_path))
    for k in range(4):
        _write(bank, k, shards=1, seed=k)
    bank.write_shard(5, _images(9), rank=0, index=0)  # partial, newer: kept
    assert bank.prune(keep_last=2) == [0, 1]
    assert bank.rounds() == [2, 3] and osp.isdir(bank.round_dir(5))
    assert bank.prune(keep_last=2) == []
    with pytest.raises(ValueError):
        bank.prune(keep_last=0)


def _rank_worker(rank, world, init_file, bank_dir):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world)
    try:
        bank = SampleBank(bank_dir, fingerprint=FP)
        recs = [bank.write_shard(0, _images(10 * rank + i, n=rank + 1), rank=rank, index=i)
                for i in range(2)]
        manifest = bank.commit_round(0, recs, seed=3)
        # after commit_round (barrier) every rank reads the full round
        data = bank.load_round(0)
        assert data['images'].shape[0] == manifest['num_images'] == 2 * (1 + 2)
    finally:
        dist.destroy_process_group()


def test_two_ranks_write_their_shards_rank0_writes_manifest(tmp_path):
    bank_dir = str(tmp_path / 'bank')
    mp.start_processes(_rank_worker, args=(2, str(tmp_path / 'init'), bank_dir), nprocs=2,
                       join=True, start_method='fork')
    manifest = json.load(open(osp.join(bank_dir, 'round_0', 'manifest.json')))
    assert [(s['rank'], s['index'], s['num_images']) for s in manifest['shards']] == [
        (0, 0, 1), (0, 1, 1), (1, 0, 2), (1, 1, 2)]
    data = SampleBank(bank_dir).load_round(0)
    expected = torch.cat([_images(0, 1), _images(1, 1), _images(10, 2), _images(11, 2)])
    torch.testing.assert_close(data['images'], expected, rtol=0, atol=0)
