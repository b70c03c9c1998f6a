"""Tiny OpenMMLab architectures for the tests (CPU, 64 px, seconds to build).

They start from the host libraries' own base configs and shrink the backbone, so the
model types, heads and train/test configs are the real ones.
"""
import os.path as osp

from mmengine.config import Config, ConfigDict

IMG = 64
DET_CLASSES = 3
SEG_CLASSES = 4
CLS_CLASSES = 5


def _base(package: str, rel_path: str) -> ConfigDict:
    mod = __import__(package)
    path = osp.join(osp.dirname(mod.__file__), '.mim', 'configs', rel_path)
    return Config.fromfile(path)


def _swin(embed_dims=16, depths=(2, 2), num_heads=(2, 2)):
    return dict(type='SwinTransformer', pretrain_img_size=IMG, embed_dims=embed_dims,
                depths=depths, num_heads=num_heads, strides=(4, 2, 2, 2)[:len(depths)],
                window_size=4, mlp_ratio=2, out_indices=tuple(range(len(depths))),
                drop_path_rate=0.0, init_cfg=None)


def mask_rcnn_swin(num_classes: int = DET_CLASSES) -> dict:
    """Mask R-CNN, Swin backbone (embed 16, depths (2, 2)), FPN 32 channels."""
    cfg = _base('mmdet', '_base_/models/mask-rcnn_r50_fpn.py')['model']
    cfg['backbone'] = _swin()
    cfg['neck'].update(in_channels=[16, 32], out_channels=32, num_outs=3)
    cfg['rpn_head'].update(in_channels=32, feat_channels=32)
    cfg['rpn_head']['anchor_generator'].update(scales=[4], strides=[4, 8, 16])
    roi = cfg['roi_head']
    roi['bbox_roi_extractor'].update(out_channels=32, featmap_strides=[4, 8, 16])
    roi['bbox_head'].update(in_channels=32, fc_out_channels=64, num_classes=num_classes)
    roi['mask_roi_extractor'].update(out_channels=32, featmap_strides=[4, 8, 16])
    roi['mask_head'].update(in_channels=32, conv_out_channels=32, num_convs=1,
                            num_classes=num_classes)
    cfg['train_cfg']['rpn_proposal'].update(nms_pre=200, max_per_img=100)
    cfg['train_cfg']['rcnn']['sampler'].update(num=64)
    cfg['test_cfg']['rpn'].update(nms_pre=200, max_per_img=50)
    cfg['test_cfg']['rcnn'].update(max_per_img=20)
    cfg['_scope_'] = 'mmdet'
    return cfg


def retinanet_pvtv2() -> dict:
    """RetinaNet, PVTv2 backbone (embed 16, 1 layer per stage), FPN 32 channels, 3 classes."""
    cfg = _base('mmdet', '_base_/models/retinanet_r50_fpn.py')['model']
    cfg['backbone'] = dict(type='PyramidVisionTransformerV2', embed_dims=16,
                           num_layers=[1, 1, 1, 1], num_heads=[2, 2, 2, 4],
                           sr_ratios=[4, 2, 1, 1], mlp_ratios=[2, 2, 2, 2],
                           out_indices=(0, 1, 2, 3), init_cfg=None)
    cfg['neck'].update(in_channels=[16, 32, 32, 64], out_channels=32, start_level=1,
                       num_outs=3)
    cfg['bbox_head'].update(in_channels=32, feat_channels=32, stacked_convs=1,
                            num_classes=DET_CLASSES)
    cfg['bbox_head']['anchor_generator'].update(strides=[8, 16, 32], octave_base_scale=2)
    cfg['test_cfg'].update(nms_pre=200, max_per_img=20)
    cfg['_scope_'] = 'mmdet'
    return cfg


def upernet_swin(num_classes: int = SEG_CLASSES) -> dict:
    """UperNet, Swin backbone (embed 16, depths (2, 2)), BN heads."""
    cfg = _base('mmseg', '_base_/models/upernet_swin.py')['model']
    cfg['data_preprocessor']['size'] = (IMG, IMG)
    cfg['backbone'] = _swin()
    bn = dict(type='BN', requires_grad=True)
    cfg['decode_head'].update(in_channels=[16, 32], in_index=[0, 1], pool_scales=(1, 2),
                              channels=16, num_classes=num_classes, norm_cfg=bn)
    cfg['auxiliary_head'].update(in_channels=32, in_index=1, channels=16,
                                 num_classes=num_classes, norm_cfg=bn)
    cfg['_scope_'] = 'mmseg'
    return cfg


def _tiny_vit_classifier(backbone: dict, neck, head: dict) -> dict:
    """mmpretrain ImageClassifier around a tiny ViT (embed 32, depth 2, 2 heads)."""
    return ConfigDict(
        _scope_='mmpretrain', type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], to_rgb=True),
        backbone=dict(type='VisionTransformer',
                      arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                feedforward_channels=64), init_cfg=None, **backbone),
        neck=neck, head=dict(in_channels=32, loss=dict(type='CrossEntropyLoss'), **head))


def deit_tiny_cls() -> dict:
    """mmpretrain ImageClassifier with a tiny ViT (embed 32, depth 2, 64 px), 5 classes."""
    return _tiny_vit_classifier(dict(img_size=IMG, patch_size=16), None,
                                dict(type='VisionTransformerClsHead', num_classes=CLS_CLASSES))


def vit_gap_cls(num_classes: int = 10) -> dict:
    """mmpretrain ImageClassifier: tiny ViT (embed 32, depth 2, 32 px, patch 8) feature
    map -> GlobalAveragePooling neck -> LinearClsHead, ``num_classes`` classes."""
    return _tiny_vit_classifier(
        dict(img_size=32, patch_size=8, out_type='featmap', drop_path_rate=0.2),
        dict(type='GlobalAveragePooling'), dict(type='LinearClsHead', num_classes=num_classes))
