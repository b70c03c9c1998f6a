# MaskAQ W4A8: data-free quantization of the Swin-T backbone of Mask R-CNN (COCO, 1x).
# The FP teacher is the OpenMMLab model zoo checkpoint (box AP 42.7, mask AP 39.3).
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', '../_base_/maskaq_det.py']

model = dict(
    _delete_=True,
    type='MaskAQAlgorithm',
    architecture={{_base_.model}},
    teacher_checkpoint='https://download.openmmlab.com/mmdetection/v2.0/swin/'
    'mask_rcnn_swin-t-p4-w7_fpn_1x_coco/'
    'mask_rcnn_swin-t-p4-w7_fpn_1x_coco_20210902_120937-9d6b7cfa.pth',
    w_bits=4,
    a_bits=8,
    input_size=(3, 512, 512),
    kd={{_base_.maskaq_kd}})
train_dataloader = {{_base_.maskaq_train_dataloader}}
optim_wrapper = {{_base_.maskaq_optim_wrapper}}
param_scheduler = {{_base_.maskaq_param_scheduler}}
train_cfg = {{_base_.maskaq_train_cfg}}
default_hooks = {{_base_.maskaq_default_hooks}}
