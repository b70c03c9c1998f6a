# MaskAQ W4A8: data-free quantization of the PVTv2-b0 backbone of RetinaNet (COCO, 1x).
# The FP teacher is the OpenMMLab model zoo checkpoint (box AP 37.1). PVTv2's
# spatial-reduction attention has fewer keys than queries (see docs/method.md).
_base_ = ['mmdet::pvt/retinanet_pvtv2-b0_fpn_1x_coco.py', '../_base_/maskaq_det.py']

model = dict(
    _delete_=True,
    type='MaskAQAlgorithm',
    architecture={{_base_.model}},
    teacher_checkpoint='https://download.openmmlab.com/mmdetection/v2.0/pvt/'
    'retinanet_pvtv2-b0_fpn_1x_coco/'
    'retinanet_pvtv2-b0_fpn_1x_coco_20210831_103157-13e9aabe.pth',
    w_bits=4,
    a_bits=8,
    input_size=(3, 512, 512),
    kd={{_base_.maskaq_kd}})
train_dataloader = {{_base_.maskaq_train_dataloader}}
optim_wrapper = {{_base_.maskaq_optim_wrapper}}
param_scheduler = {{_base_.maskaq_param_scheduler}}
train_cfg = {{_base_.maskaq_train_cfg}}
default_hooks = {{_base_.maskaq_default_hooks}}
