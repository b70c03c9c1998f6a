"""maskaq_plugin/datasets/digit_scenes.py (CLI: tools/make_digit_scenes.py): real mmdet/mmseg
loaders read it; masks, boxes, maps agree."""
import hashlib
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from mmcv.transforms import LoadImageFromFile
from mmdet.datasets import CocoDataset
from mmdet.datasets.transforms import LoadAnnotations as LoadDetAnnotations
from mmseg.datasets import ADE20KDataset, BaseSegDataset
from mmseg.datasets.transforms import LoadAnnotations as LoadSegAnnotations
from pycocotools import mask as mask_utils

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def tree_digest(root):
    """sha256 of every file (relative path + bytes) under ``root``."""
    digest = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = osp.join(dirpath, name)
            digest.update(osp.relpath(path, root).encode())
            with open(path, 'rb') as f:
                digest.update(f.read())
    return digest.hexdigest()


def coco_dataset(root, split, scenes_module):
    return CocoDataset(
        data_root=root, ann_file=f'coco/annotations/instances_{split}.json',
        data_prefix=dict(img=f'coco/{split}/'), metainfo=dict(classes=scenes_module.DET_CLASSES),
        pipeline=[LoadImageFromFile(), LoadDetAnnotations(with_bbox=True, with_mask=True)])


def seg_dataset(root, split, scenes_module):
    return BaseSegDataset(
        data_root=root, img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=False,
        data_prefix=dict(img_path=f'ade/images/{split}', seg_map_path=f'ade/annotations/{split}'),
        metainfo=dict(classes=scenes_module.SEG_CLASSES, palette=scenes_module.SEG_PALETTE),
        pipeline=[LoadImageFromFile(), LoadSegAnnotations()])


@pytest.mark.parametrize('split,ade_split,num', [('train', 'training', 6),
                                                 ('val', 'validation', 4)])
def test_coco_and_ade_views_agree(digit_scenes, scenes_module, split, ade_split, num):
    det = coco_dataset(digit_scenes, split, scenes_module)
    seg = seg_dataset(digit_scenes, ade_split, scenes_module)
    assert len(det) == len(seg) == num
    assert det.metainfo['classes'] == tuple(str(d) for d in range(10))
    assert seg.metainfo['classes'][0] == 'background' and len(seg.metainfo['classes']) == 11
    for i in range(num):
        d, s = det[i], seg[i]
        assert d['img'].shape == (128, 128, 3) and d['img'].dtype == np.uint8
        np.testing.assert_array_equal(d['img'], s['img'])  # the same scene in both views
        boxes, labels = d['gt_bboxes'].numpy(), d['gt_bboxes_labels']
        masks = d['gt_masks'].to_ndarray().astype(bool)  # (K, H, W)
        assert 1 <= len(labels) <= 4 and set(labels) <= set(range(10))
        rebuilt = np.zeros((128, 128), np.uint8)
        for box, label, mask in zip(boxes, labels, masks):
            ys, xs = np.nonzero(mask)
            # the box is the tight box of the visible mask, in mmdet's x1y1x2y2 convention
            np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            assert mask.sum() >= 20
            assert not rebuilt[mask].any(), 'instance masks must not overlap'
            rebuilt[mask] = label + 1
            # the mask covers real ink: the digit contrasts with its surroundings
            x1, y1, x2, y2 = box.astype(int)
            ring = np.zeros_like(mask)
            ring[max(y1 - 3, 0):y2 + 3, max(x1 - 3, 0):x2 + 3] = True
            ring &= rebuilt == 0
            img = d['img'].astype(np.float32).mean(-1)
            assert abs(img[mask].mean() - img[ring].mean()) > 40
        np.testing.assert_array_equal(s['gt_seg_map'], rebuilt)


def test_coco_json_fields(digit_scenes):
    with open(osp.join(digit_scenes, 'coco/annotations/instances_train.json')) as f:
        coco = json.load(f)
    assert [(c['id'], c['name']) for c in coco['categories']] == [
        (d + 1, str(d)) for d in range(10)]
    assert [im['id'] for im in coco['images']] == list(range(1, 7))
    ann_ids = [a['id'] for a in coco['annotations']]
    assert ann_ids == list(range(1, len(ann_ids) + 1))
    for ann in coco['annotations']:
        assert ann['iscrowd'] == 0
        assert ann['area'] == mask_utils.area(ann['segmentation']) > 0
        assert ann['bbox'] == list(mask_utils.toBbox(ann['segmentation']))


def test_ade20k_dataset_refuses_custom_classes(digit_scenes, scenes_module):
    """Why the configs use BaseSegDataset: ADE20KDataset only accepts its own 150 names."""
    with pytest.raises(ValueError, match='subset'):
        ADE20KDataset(data_root=digit_scenes, metainfo=dict(classes=scenes_module.SEG_CLASSES))


def test_deterministic_and_prefix_stable(digit_scenes, scenes_module, tmp_path):
    again = tmp_path / 'again'
    scenes_module.generate(str(again), num_train=6, num_val=4, progress=False)
    assert tree_digest(str(again)) == tree_digest(digit_scenes)
    # scene i depends only on (seed, split, i): a smaller set is a prefix of a larger one
    small = tmp_path / 'small'
    scenes_module.generate(str(small), num_train=3, num_val=1, progress=False)
    for rel in ('coco/train/0002.png', 'ade/annotations/training/0002.png', 'coco/val/0000.png'):
        with open(small / rel, 'rb') as a, open(osp.join(digit_scenes, rel), 'rb') as b:
            assert a.read() == b.read()
    other = tmp_path / 'other_seed'
    scenes_module.generate(str(other), num_train=1, num_val=1, seed=1, progress=False)
    with open(other / 'coco/train/0000.png', 'rb') as a, \
            open(osp.join(digit_scenes, 'coco/train/0000.png'), 'rb') as b:
        assert a.read() != b.read()


def test_missing_digits_names_the_fix(scenes_module):
    with pytest.raises(FileNotFoundError, match='apt-get install -y opencv-doc'):
        scenes_module.find_digits_png('/nonexistent/digits.png')


def test_gzipped_digits_png(scenes_module, tmp_path):
    import gzip
    src = scenes_module.find_digits_png()
    gz = tmp_path / 'digits.png.gz'
    opener = gzip.open if src.endswith('.gz') else open
    with opener(src, 'rb') as f, gzip.open(gz, 'wb') as g:
        g.write(f.read())
    cells = scenes_module.load_digit_cells(str(gz))
    assert cells.shape == (10, 500, 20, 20)
    np.testing.assert_array_equal(cells, scenes_module.load_digit_cells(src))


def test_up_to_date_only_for_the_same_complete_set(digit_scenes, scenes_module, tmp_path):
    assert scenes_module.up_to_date(digit_scenes, 6, 4, 128, 0)
    assert not scenes_module.up_to_date(digit_scenes, 7, 4, 128, 0)  # more scenes wanted
    assert not scenes_module.up_to_date(digit_scenes, 6, 4, 128, 1)  # another seed
    assert not scenes_module.up_to_date(str(tmp_path / 'nothing'), 6, 4, 128, 0)
    copy = tmp_path / 'copy'
    scenes_module.generate(str(copy), num_train=6, num_val=4, progress=False)
    os.remove(copy / 'ade' / 'annotations' / 'validation' / '0003.png')  # a lost file
    assert not scenes_module.up_to_date(str(copy), 6, 4, 128, 0)


def test_cli_writes_the_same_scenes(digit_scenes, tmp_path):
    """tools/make_digit_scenes.py is a thin CLI of the module: same bytes, then a no-op."""
    out = tmp_path / 'cli'
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'make_digit_scenes.py'), '--out', str(out),
           '--num-train', '6', '--num-val', '4']
    first = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=str(tmp_path))
    assert 'wrote 6 train / 4 val scenes' in first.stdout
    assert tree_digest(str(out)) == tree_digest(digit_scenes)
    again = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=str(tmp_path))
    assert 'up to date' in again.stdout
