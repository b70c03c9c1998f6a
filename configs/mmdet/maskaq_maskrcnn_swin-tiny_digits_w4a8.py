# MaskAQ W4A8 of the tiny Swin Mask R-CNN trained on the digit scenes (the demo and the
# end-to-end tests). Teacher: checkpoints/maskrcnn_swin-tiny_digits.pth, trained by
# tools/train_fp_models.py with ./maskrcnn_swin-tiny_fp_digits.py. Sizes are the paper's
# recipe scaled down to run on a laptop CPU in minutes.
_base_ = ['./maskrcnn_swin-tiny_fp_digits.py', '../_base_/maskaq_det.py']

max_epochs = 6
refresh_interval = 3
batch_size = 8

model = dict(
    _delete_=True,
    type='MaskAQAlgorithm',
    architecture={{_base_.model}},
    teacher_checkpoint='checkpoints/maskrcnn_swin-tiny_digits.pth',
    w_bits=4,
    a_bits=8,
    input_size=(3, 128, 128),
    kd={{_base_.maskaq_kd}})
train_dataloader = dict(
    _delete_=True,
    batch_size=batch_size,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='MaskAQSyntheticDataset',
        task='det',
        num_samples=64,
        metainfo={{_base_.metainfo}}))
optim_wrapper = {{_base_.maskaq_optim_wrapper}}
param_scheduler = [
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs,
        eta_min_ratio=0.01,
        by_epoch=True,
        begin=0,
        end=max_epochs,
        convert_to_iter_based=True)
]
train_cfg = dict(
    _delete_=True, type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(
    checkpoint=dict(by_epoch=True, interval=1, max_keep_ckpts=2), logger=dict(interval=4))
custom_hooks = [
    dict(
        type='SampleRefreshHook',
        interval=refresh_interval,
        by_epoch=True,
        batch_size=batch_size,
        synthesis=dict(
            method='maskaq',
            iters=200,
            lr=0.1,
            loss_weights=dict(head=1.0, sem=1.0, tv=2.5e-5, ent=1.0, mad=0.1))),
    dict(type='MaskAQExportHook', formats=('onnx', 'openvino')),
]
