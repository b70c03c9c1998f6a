# Full-precision UperNet with a tiny Swin backbone on the ADE20K-style digit scenes
# (tools/make_digit_scenes.py), 11 classes, background + digits 0-9: model, data and FP
# training schedule. Trained by ../mmseg/upernet_swin-tiny_fp_digits.py
# (tools/train_fp_models.py), shipped as checkpoints/upernet_swin-tiny_digits.pth, the
# backbone initialised from the detector's (checkpoints/maskrcnn_swin-tiny_digits.pth);
# ./maskaq_seg_digits.py quantizes it.
# tools/train_fp_models.py also sets background class weight 0.2 in both heads'
# CrossEntropyLoss (MODELS['seg']['cfg_options'] there), not here, so that the MaskAQ configs
# inheriting this model keep the plain loss for their L_sem prior. (mmseg 1.2.2's
# CrossEntropyLoss with class_weight fails on label 255, i.e. on padded pixels: keep the
# train images at 128x128 when using it.)
#
# mmseg's ADE20KDataset refuses class names outside ADE's 150 classes, so the data set is
# BaseSegDataset with the ADE20K layout and suffixes (.png images) and reduce_zero_label=False.
# Changing the data root: override train_dataloader.dataset.data_root and
# val_dataloader.dataset.data_root (test_dataloader.dataset.data_root too).
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
]

data_root = 'data/digit_scenes/'
crop_size = (128, 128)
max_iters = 5000
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN has no CPU kernel
metainfo = dict(
    classes=('background', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'),
    palette=[[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
             [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
             [210, 245, 60], [250, 190, 212]])

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        pretrain_img_size=crop_size[0],
        embed_dims=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        mlp_ratio=2,
        drop_path_rate=0.1,
        init_cfg=None),
    decode_head=dict(
        in_channels=[32, 64, 128, 256],
        channels=32,
        num_classes=11,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=128, channels=32, num_classes=11, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
dataset_type = 'BaseSegDataset'
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        img_suffix='.png',
        seg_map_suffix='.png',
        reduce_zero_label=False,
        data_prefix=dict(
            img_path='ade/images/training', seg_map_path='ade/annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        img_suffix='.png',
        seg_map_suffix='.png',
        reduce_zero_label=False,
        data_prefix=dict(
            img_path='ade/images/validation',
            seg_map_path='ade/annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# The heads (decode + auxiliary, both matched by 'head') learn at 15x the backbone's lr.
# With one lr for all (1e-3), training sat for the whole 2000 iterations on the plateau
# "background + every digit pixel as one class" (val mIoU ~9 %): the backbone, initialised
# from the detector's, already separates digit from background, but telling the digits
# apart has to be learnt by the (randomly initialised) heads and the deep stages together;
# the larger lrs leave that plateau after ~600-1500 iterations.
optim_wrapper = dict(
    optimizer=dict(lr=2e-3, weight_decay=0.01),
    paramwise_cfg=dict(custom_keys=dict(head=dict(lr_mult=15.0))))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', power=1.0, eta_min=1e-5, by_epoch=False, begin=100,
         end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
