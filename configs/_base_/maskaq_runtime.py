# MaskAQ defaults shared by every task (docs/method.md). The task bases maskaq_det.py,
# maskaq_seg.py and maskaq_cls.py add the synthetic training set; a model config inherits
# the upstream config and one task base, then picks the pieces it needs:
#
#   _base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', '../_base_/maskaq_det.py']
#   model = dict(_delete_=True, type='MaskAQAlgorithm', architecture={{_base_.model}},
#                teacher_checkpoint='...', w_bits=4, a_bits=8, input_size=(3, 512, 512),
#                kd={{_base_.maskaq_kd}})
#   train_dataloader = {{_base_.maskaq_train_dataloader}}
#   optim_wrapper = {{_base_.maskaq_optim_wrapper}}
#   param_scheduler = {{_base_.maskaq_param_scheduler}}
#   train_cfg = {{_base_.maskaq_train_cfg}}
#   default_hooks = {{_base_.maskaq_default_hooks}}
#   log_processor = dict(by_epoch=True)        # mmseg only: its default is by iteration
#
# The upstream config defines model, train_dataloader, optim_wrapper, ... too, and MMEngine
# refuses keys defined by two bases, so the defaults live under ``maskaq_*`` names and
# each carries ``_delete_=True`` where it replaces the upstream value; the config that
# inherits both (above) makes the assignments. A config inheriting that one states only
# what differs, e.g. ``model = dict(a_bits=4)``. Values computed here (the schedule length)
# are fixed when this file is read: a config with another length derives its scheduler,
# train_cfg and hooks from these, e.g. ``dict(_base_.maskaq_synthesis, iters=200)``, as
# the digit-scene bases maskaq_det_digits.py and maskaq_seg_digits.py do.
custom_imports = dict(imports=['maskaq_plugin'], allow_failed_imports=False)

maskaq_max_epochs = 100  # QAT epochs over the synthetic set (paper code)
maskaq_refresh_interval = 30  # R: regenerate the synthetic set every R epochs
maskaq_batch_size = 16  # QAT batch (paper code)
maskaq_num_samples = 1024  # synthetic images per round (ours)

# Stage 1 synthesis: AdamW lr 0.1 cosine to 1e-3 over T iterations; loss weights of
# L = L_head + L_sem + 2.5e-5 L_tv + L_ent + 0.1 L_mad.
maskaq_synthesis = dict(
    method='maskaq',
    iters=2000,
    lr=0.1,
    loss_weights=dict(head=1.0, sem=1.0, tv=2.5e-5, ent=1.0, mad=0.1))

# Stage 2 QAT: SGD, Nesterov momentum 0.9, lr 1e-3, cosine decay to 1 % over the run.
maskaq_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=1e-3, momentum=0.9, nesterov=True, weight_decay=0.0))
maskaq_param_scheduler = [
    dict(
        type='CosineAnnealingLR',
        T_max=maskaq_max_epochs,
        eta_min_ratio=0.01,
        by_epoch=True,
        begin=0,
        end=maskaq_max_epochs,
        convert_to_iter_based=True)
]
maskaq_train_cfg = dict(
    _delete_=True, type='EpochBasedTrainLoop', max_epochs=maskaq_max_epochs, val_interval=10)
# Epoch-based everywhere (mmseg's upstream defaults are iteration-based).
maskaq_default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=10, max_keep_ckpts=3),
    logger=dict(type='LoggerHook', interval=50))

custom_hooks = [
    dict(
        type='SampleRefreshHook',
        interval=maskaq_refresh_interval,
        by_epoch=True,
        batch_size=maskaq_batch_size,
        synthesis=maskaq_synthesis),
    dict(type='MaskAQExportHook', formats=('onnx', 'openvino')),
]
