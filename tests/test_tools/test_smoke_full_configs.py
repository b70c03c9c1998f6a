"""tools/smoke_full_configs.py: the generated val sets load with the host libraries'
readers at the configs' sizes, the random teacher loads strictly, and the budget
extrapolation adds up (the full-size runs themselves are `make smoke-full`, not tests)."""
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from .conftest import ROOT, load_tool

SEGFORMER = 'configs/mmseg/maskaq_segformer_mit-b0_ade20k-512x512_w4a8.py'


@pytest.fixture(scope='module')
def tool():
    return load_tool('smoke_full_configs')


def test_coco_layout_loads_with_pycocotools_at_the_val_scale(tool, tmp_path):
    from pycocotools.coco import COCO
    ann = tool.write_coco(str(tmp_path), num_images=2)
    assert ann == str(tmp_path / 'annotations' / 'instances_val2017.json')
    coco = COCO(ann)
    assert len(coco.getCatIds()) == 80 and len(coco.getImgIds()) == 2
    for img in coco.loadImgs(coco.getImgIds()):
        assert (img['width'], img['height']) == (1333, 800)
        assert Image.open(tmp_path / 'val2017' / img['file_name']).size == (1333, 800)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img['id']))
        assert len(anns) == 2
        for a in anns:
            x, y, w, h = a['bbox']
            assert 0 <= x and x + w <= 1333 and 0 <= y and y + h <= 800
            assert coco.annToMask(a).sum() == pytest.approx(w * h, rel=0.05)


def test_ade20k_layout_has_matching_label_maps(tool, tmp_path):
    tool.write_ade20k(str(tmp_path), num_images=2)
    images = sorted((tmp_path / 'images' / 'validation').iterdir())
    assert [p.name for p in images] == ['ADE_val_00000001.jpg', 'ADE_val_00000002.jpg']
    for p in images:
        seg = np.asarray(Image.open(tmp_path / 'annotations' / 'validation' /
                                    p.name.replace('.jpg', '.png')))
        assert Image.open(p).size == (512, 512) and seg.shape == (512, 512)
        assert seg.dtype == np.uint8 and seg.max() <= 150 and len(np.unique(seg)) > 1


def test_imagenet_layout_loads_with_mmpretrain(tool, tmp_path):
    from mmpretrain.datasets import ImageNet
    tool.write_imagenet(str(tmp_path), num_images=2)
    dataset = ImageNet(data_root=str(tmp_path), split='val')  # the configs' val dataset
    assert len(dataset) == 2
    info = dataset.get_data_info(1)
    assert Image.open(info['img_path']).size == (256, 256)
    assert 0 <= info['gt_label'] < 1000


def test_random_teacher_loads_strictly_into_the_architecture(tool, tmp_path):
    import torch

    from maskaq_plugin.models.architecture import build_in_scope, load_state_dict_strict
    cfg = Config.fromfile(osp.join(ROOT, SEGFORMER))
    path = tool.write_teacher(cfg, str(tmp_path / 'teacher.pth'))
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}
    model = build_in_scope(cfg.model.architecture, cfg.default_scope)
    load_state_dict_strict(model, path)  # raises on any missing / unexpected key
    key = 'backbone.layers.0.0.projection.weight'
    assert torch.equal(model.state_dict()[key], ckpt['state_dict'][key])


def test_extrapolation_of_the_paper_budget(tool):
    budget = tool.paper_budget(Config.fromfile(osp.join(ROOT, SEGFORMER)))
    # refresh after epochs 30, 60 and 90: round 0 + 3 rounds
    assert budget == dict(iters=2000, epochs=100, rounds=4, num_samples=1024, batch=16)
    row = dict(synthesis_s_per_iter=2.0, qat_s_per_step=3.0)  # measured at batch 2
    synth_h, qat_h = tool.extrapolate(row, budget, batch=2)
    assert synth_h == pytest.approx((4 * 1024 + 16) * 2000 * 1.0 / 3600)
    assert qat_h == pytest.approx(100 * 1024 * 1.5 / 3600)
    assert tool.extrapolate(dict(synthesis_s_per_iter=None, qat_s_per_step=1.0),
                            budget, 1) == (None, None)


def test_measure_reads_the_stamped_log(tool):
    lines = [(1.0, 'x - calibrated the student quantizer ranges on 1 bootstrap\n'),
             (5.0, 'x - sample bank round 0, synthesis: head=1\n'),
             (6.0, 'Epoch(train) [1][1/1]  lr: 1e-3  eta: 0:00:00  time: 2.5000  '
                   'data_time: 0.1\n'),
             (9.0, 'Epoch(val) [1][2/2]    aAcc: 2.1600  mIoU: 0.0300  mAcc: 1.0\n'),
             (9.5, 'x - backbone export FAILED: ExportMismatchError: OpenVINO IR b.xml differs '
                   'from the torch model: relative L2 error 0.0847 > 0.05 (compiled)\n')]
    assert tool.measure(lines, iters=2, metric='mIoU') == dict(
        synthesis_s_per_iter=2.0, qat_s_per_step=2.5, metric='mIoU: 0.0300',
        export_failed=['backbone export FAILED: ExportMismatchError '
                       'relative L2 error 0.0847 > 0.05'])


def test_a_call_keeps_the_other_configs_rows_and_replaces_its_own(tool, tmp_path):
    deit, seg = tool.CONFIGS[1], tool.CONFIGS[0]
    old = [dict(config=deit, wall_s=1.0), dict(config=seg, wall_s=2.0)]
    path = tmp_path / 'summary.json'
    assert tool.previous_rows(str(path)) == []
    path.write_text(__import__('json').dumps(old))
    rows = tool.merge_rows(tool.previous_rows(str(path)), dict(config=deit, wall_s=3.0))
    assert [(r['config'], r['wall_s']) for r in rows] == [(seg, 2.0), (deit, 3.0)]
