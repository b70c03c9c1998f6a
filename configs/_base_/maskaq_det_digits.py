# MaskAQ on the digit scenes (mmdet): the tiny Swin Mask R-CNN of
# ./maskrcnn_swin-tiny_digits.py, quantized from its shipped teacher (the demo and the
# end-to-end tests). The paper's recipe (./maskaq_runtime.py) scaled down to run on a laptop
# CPU in minutes: 6 QAT epochs, refresh every 3, batch 8, 64 images, T = 200. A config
# inheriting this one states its bits: model = dict(w_bits=4, a_bits=8).
_base_ = ['./maskrcnn_swin-tiny_digits.py', './maskaq_det.py']

max_epochs = 6
refresh_interval = 3
batch_size = 8

model = dict(
    _delete_=True,
    type='MaskAQAlgorithm',
    architecture={{_base_.model}},
    teacher_checkpoint='checkpoints/maskrcnn_swin-tiny_digits.pth',
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
# The paper's cosine schedule and synthesis, over max_epochs and with T = 200.
param_scheduler = [dict(_base_.maskaq_param_scheduler[0], T_max=max_epochs, end=max_epochs)]
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
        synthesis=dict(_base_.maskaq_synthesis, iters=200)),
    dict(type='MaskAQExportHook', formats=('onnx', 'openvino')),
]
