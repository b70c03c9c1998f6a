# MaskAQ W4A8: data-free quantization of the MiT-B0 backbone of SegFormer (ADE20K 512x512).
# The FP teacher is the OpenMMLab model zoo checkpoint (160k schedule, mIoU 37.4).
_base_ = ['mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
          '../_base_/maskaq_seg.py']

model = dict(
    _delete_=True,
    type='MaskAQAlgorithm',
    architecture={{_base_.model}},
    teacher_checkpoint='https://download.openmmlab.com/mmsegmentation/v0.5/segformer/'
    'segformer_mit-b0_512x512_160k_ade20k/'
    'segformer_mit-b0_512x512_160k_ade20k_20210726_101530-8ffa8fda.pth',
    w_bits=4,
    a_bits=8,
    input_size=(3, 512, 512),
    kd={{_base_.maskaq_kd}})
train_dataloader = {{_base_.maskaq_train_dataloader}}
optim_wrapper = {{_base_.maskaq_optim_wrapper}}
param_scheduler = {{_base_.maskaq_param_scheduler}}
train_cfg = {{_base_.maskaq_train_cfg}}
default_hooks = {{_base_.maskaq_default_hooks}}
log_processor = dict(by_epoch=True)  # mmseg's default is by iteration
