# Full-precision Mask R-CNN with a tiny Swin backbone, trained from scratch on the
# digit scenes (tools/make_digit_scenes.py): model, data and FP training schedule. Trained
# by ../mmdet/maskrcnn_swin-tiny_fp_digits.py (tools/train_fp_models.py), shipped as
# checkpoints/maskrcnn_swin-tiny_digits.pth; ./maskaq_det_digits.py quantizes it.
#
# Swin: embed_dims 32, depths (2, 2, 2, 2), heads (1, 2, 4, 8) (head dim 32 as in Swin-T),
# window 4 (divides the 32/16/8/4 feature maps of a 128 px input), mlp_ratio 2; FPN 48
# channels, small RoI heads: 1.9 M parameters, a 7.4 MB checkpoint.
# Changing the data root: the evaluator's ann_file is a full path, so override it too:
#   --cfg-options train_dataloader.dataset.data_root=D val_dataloader.dataset.data_root=D \
#                 test_dataloader.dataset.data_root=D \
#                 val_evaluator.ann_file=D/coco/annotations/instances_val.json \
#                 test_evaluator.ann_file=D/coco/annotations/instances_val.json
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']

data_root = 'data/digit_scenes/'
img_scale = (128, 128)
max_epochs = 30
metainfo = dict(
    classes=('0', '1', '2', '3', '4', '5', '6', '7', '8', '9'),
    palette=[(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
             (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60),
             (250, 190, 212)])

# torchvision's CPU RoIAlign gives the same values as mmcv's, 2x faster (fwd + bwd).
roi_layer = dict(use_torchvision=True)
model = dict(
    backbone=dict(
        embed_dims=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        mlp_ratio=2,
        drop_path_rate=0.1,
        convert_weights=False,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=48),
    rpn_head=dict(
        in_channels=48, feat_channels=48, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=48, roi_layer=roi_layer),
        bbox_head=dict(in_channels=48, fc_out_channels=64, num_classes=10),
        mask_roi_extractor=dict(out_channels=48, roi_layer=roi_layer),
        mask_head=dict(
            in_channels=48, conv_out_channels=48, num_convs=2, num_classes=10)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=50)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='coco/annotations/instances_train.json',
        data_prefix=dict(img='coco/train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=16),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='coco/annotations/instances_val.json',
        data_prefix=dict(img='coco/val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'coco/annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, weight_decay=0.05), clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs,
        eta_min_ratio=0.01,
        by_epoch=True,
        begin=0,
        end=max_epochs,
        convert_to_iter_based=True),
]
auto_scale_lr = dict(base_batch_size=8)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
