"""MaskAQSyntheticDataset: host-format items that the REAL data preprocessors map back
to the bank's normalised images."""
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import DATASETS, MODELS

import maskaq_plugin  # noqa: F401  (registers the dataset)
from maskaq_plugin.datasets import MaskAQSyntheticDataset
from maskaq_plugin.models.architecture import preprocessor_norm
from maskaq_plugin.synthesis.bank import BankMismatchError, SampleBank, model_fingerprint

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
PREPROCESSORS = {
    'det': dict(_scope_='mmdet', type='DetDataPreprocessor', mean=MEAN, std=STD, bgr_to_rgb=True,
                pad_size_divisor=32, pad_mask=True),
    'seg': dict(_scope_='mmseg', type='SegDataPreProcessor', mean=MEAN, std=STD, bgr_to_rgb=True,
                pad_val=0, seg_pad_val=255, size=(64, 48)),
    'cls': dict(_scope_='mmpretrain', type='ClsDataPreprocessor', mean=MEAN, std=STD, to_rgb=True),
}


def _targets(task, n, gen):
    if task == 'det':
        return [dict(bboxes=torch.tensor([[2., 3., 20., 30.], [10., 5., 40., 60.]]),
                     labels=torch.tensor([1, 2])) for _ in range(n)]
    if task == 'seg':
        return [torch.randint(0, 4, (64, 48), generator=gen, dtype=torch.uint8)
                for _ in range(n)]
    return [int(i % 5) for i in range(n)]


def _make_bank(path, task, preprocessor, k=0, seed=0, fingerprint=None):
    norm = preprocessor_norm(preprocessor)
    gen = torch.Generator().manual_seed(seed)
    lo = torch.tensor([(0 - m) / s for m, s in zip(norm['mean'], norm['std'])]).view(1, 3, 1, 1)
    hi = torch.tensor([(255 - m) / s for m, s in zip(norm['mean'], norm['std'])]).view(1, 3, 1, 1)
    bank = SampleBank(str(path), fingerprint=fingerprint)
    recs = []
    for i in range(2):
        images = torch.maximum(torch.minimum(torch.randn(3, 3, 64, 48, generator=gen), hi), lo)
        recs.append(bank.write_shard(k, images, rank=0, index=i,
                                     targets=_targets(task, 3, gen)))
    bank.commit_round(k, recs, seed=seed, extra=dict(norm=norm, task=task))
    return bank


@pytest.mark.parametrize('task', ['det', 'seg', 'cls'])
def test_round_trip_through_real_preprocessor(task, tmp_path):
    pre = MODELS.build(PREPROCESSORS[task])
    bank = _make_bank(tmp_path, task, pre)
    ds = DATASETS.build(dict(type='MaskAQSyntheticDataset', task=task, num_samples=10,
                             bank_dir=str(tmp_path), augment='none'))
    assert len(ds) == 10
    images = bank.load_round(0)['images']
    items = [ds[i] for i in range(8)]  # 6 images in the bank: 6, 7 wrap around
    assert items[0]['inputs'].shape == (3, 64, 48) and items[0]['inputs'].dtype == torch.float32
    out = pre(pseudo_collate(items), training=True)
    got = out['inputs'][..., :64, :48]  # det pads to a multiple of 32
    expected = torch.cat([images, images[:2]])
    assert (got - expected).abs().max() < 1e-5
    # raw inputs are BGR pixels in [0, 255]
    raw = items[0]['inputs']
    assert raw.min() >= -1e-3 and raw.max() <= 255 + 1e-3
    torch.testing.assert_close(raw.flip(0)[0], images[0, 0] * STD[0] + MEAN[0])
    samples = out['data_samples']
    if task == 'det':
        assert samples[0].gt_instances.bboxes.shape == (2, 4)
        assert samples[0].metainfo['img_shape'] == (64, 48)
        assert samples[0].metainfo['batch_input_shape'] == (64, 64)
        assert samples[0].metainfo['scale_factor'] == (1.0, 1.0)
    elif task == 'seg':
        seg = bank.load_round(0)['targets'][1]
        assert torch.equal(samples[1].gt_sem_seg.data[0], seg.long())
    else:
        assert samples[4].gt_label.tolist() == [1]  # shard 1, image 1


def test_flip_keeps_targets_aligned(tmp_path):
    pre = MODELS.build(PREPROCESSORS['det'])
    _make_bank(tmp_path, 'det', pre)
    ds = MaskAQSyntheticDataset('det', 6, bank_dir=str(tmp_path), augment='flip')
    plain = MaskAQSyntheticDataset('det', 6, bank_dir=str(tmp_path), augment='none')
    torch.manual_seed(0)
    flips = 0
    for _ in range(10):
        item, ref = ds[0], plain[0]
        sample = item['data_samples']
        if sample.metainfo['flip']:
            flips += 1
            torch.testing.assert_close(item['inputs'], ref['inputs'].flip(-1))
            torch.testing.assert_close(sample.gt_instances.bboxes[0],
                                       torch.tensor([48 - 20., 3., 48 - 2., 30.]))
        else:
            torch.testing.assert_close(item['inputs'], ref['inputs'])
    assert 0 < flips < 10
    seg_dir = tmp_path / 'seg'
    _make_bank(seg_dir, 'seg', MODELS.build(PREPROCESSORS['seg']))
    seg = MaskAQSyntheticDataset('seg', 6, bank_dir=str(seg_dir), augment='flip')
    ref = MaskAQSyntheticDataset('seg', 6, bank_dir=str(seg_dir), augment='none')[2]
    for _ in range(6):
        item = seg[2]
        if item['data_samples'].metainfo['flip']:
            assert torch.equal(item['data_samples'].gt_sem_seg.data,
                               ref['data_samples'].gt_sem_seg.data.flip(-1))


def test_paper_and_colour_augment_change_pixels_not_shape(tmp_path):
    _make_bank(tmp_path / 'det', 'det', MODELS.build(PREPROCESSORS['det']))
    torch.manual_seed(0)
    jitter = MaskAQSyntheticDataset('det', 6, bank_dir=str(tmp_path / 'det'),
                                    augment='flip_color')
    ref = MaskAQSyntheticDataset('det', 6, bank_dir=str(tmp_path / 'det'), augment='none')
    changed = 0
    for _ in range(6):
        item = jitter[0]
        raw = ref[0]['inputs']
        raw = raw.flip(-1) if item['data_samples'].metainfo['flip'] else raw
        assert item['inputs'].shape == raw.shape
        assert item['inputs'].min() >= -1e-3 and item['inputs'].max() <= 255 + 1e-3
        changed += not torch.allclose(item['inputs'], raw, atol=1e-3)
    assert changed >= 2  # p = 0.8 per image
    _make_bank(tmp_path, 'cls', MODELS.build(PREPROCESSORS['cls']))
    torch.manual_seed(0)
    ds = MaskAQSyntheticDataset('cls', 6, bank_dir=str(tmp_path))
    assert ds.augment == 'paper'
    plain = MaskAQSyntheticDataset('cls', 6, bank_dir=str(tmp_path), augment='none')
    item = ds[1]
    assert item['inputs'].shape == (3, 64, 48)
    assert not torch.allclose(item['inputs'], plain[1]['inputs'])
    with pytest.raises(ValueError, match="'paper' is for classification"):
        MaskAQSyntheticDataset('det', 6, augment='paper')


def test_follows_new_rounds_and_rewritten_manifests(tmp_path):
    pre = MODELS.build(PREPROCESSORS['cls'])
    ds = MaskAQSyntheticDataset('cls', 4, bank_dir=str(tmp_path), augment='none')
    with pytest.raises(RuntimeError, match='no complete round'):
        ds[0]
    assert ds.get_data_info(3) == dict(width=1, height=1, sample_idx=3)  # not known yet
    _make_bank(tmp_path, 'cls', pre, k=0, seed=0)
    first = ds[0]['inputs']
    _make_bank(tmp_path, 'cls', pre, k=1, seed=1)
    second = ds[0]['inputs']
    assert not torch.allclose(first, second)
    _make_bank(tmp_path, 'cls', pre, k=1, seed=2)  # round 1 rewritten (repaired)
    assert not torch.allclose(second, ds[0]['inputs'])
    assert ds.get_data_info(0)['width'] == 48 and ds.get_data_info(0)['height'] == 64


def test_errors_name_the_fix(tmp_path):
    ds = MaskAQSyntheticDataset('det', 4)
    with pytest.raises(RuntimeError, match='SampleRefreshHook'):
        ds[0]
    pre = MODELS.build(PREPROCESSORS['det'])
    mine = model_fingerprint('MaskRCNN/SwinTransformer', (3, 64, 48), MEAN, STD, True, 'det')
    _make_bank(tmp_path, 'det', pre, fingerprint=mine)
    ds = MaskAQSyntheticDataset('det', 4, bank_dir=str(tmp_path))
    ds.fingerprint = model_fingerprint('RetinaNet/PVT', (3, 64, 48), MEAN, STD, True, 'det')
    with pytest.raises(BankMismatchError, match='RetinaNet/PVT'):
        ds[0]
    with pytest.raises(ValueError, match='task'):
        MaskAQSyntheticDataset('pose', 4)
    with pytest.raises(ValueError, match='num_samples'):
        MaskAQSyntheticDataset('det', 0)


def test_round_pruned_between_manifest_and_shards(tmp_path):
    pre = MODELS.build(PREPROCESSORS['cls'])
    bank = _make_bank(tmp_path, 'cls', pre, k=0, seed=0)
    ds = MaskAQSyntheticDataset('cls', 4, bank_dir=str(tmp_path), augment='none')
    round0 = ds._current_manifest()  # a worker read round 0's manifest, not its shards
    _make_bank(tmp_path, 'cls', pre, k=1, seed=1)
    bank.prune(keep_last=1)  # the writer pruned round 0 meanwhile
    assert ds._load_shards(round0) is False  # not an error: a newer round exists
    expected = SampleBank(str(tmp_path)).load_round(1)['images'][0]
    out = pre(pseudo_collate([ds[0]]))['inputs'][0]
    assert (out - expected).abs().max() < 1e-5
