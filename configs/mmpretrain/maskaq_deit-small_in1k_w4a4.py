# MaskAQ W4A4: data-free quantization of DeiT-S (ImageNet-1k), the paper's setting:
# 100 QAT epochs, refresh every 30, batch 16, T = 2000 synthesis iterations.
# The FP teacher is the OpenMMLab model zoo checkpoint (top-1 80.69).
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py', '../_base_/maskaq_cls.py']

# The Runner passes the top-level data_preprocessor to the model: give it its type.
data_preprocessor = dict(_base_.data_preprocessor, type='ClsDataPreprocessor')
model = dict(
    _delete_=True,
    type='MaskAQAlgorithm',
    # The upstream classifier without its init_cfg and its Mixup/CutMix batch augments
    # (train_cfg; QAT uses the augmentations of docs/method.md), with the data preprocessor.
    architecture=dict(
        {key: _base_.model[key] for key in ('type', 'backbone', 'neck', 'head')},
        data_preprocessor=data_preprocessor),
    teacher_checkpoint='https://download.openmmlab.com/mmclassification/v0/deit/'
    'deit-small_pt-4xb256_in1k_20220218-9425b9bb.pth',
    w_bits=4,
    a_bits=4,
    input_size=(3, 224, 224),
    kd={{_base_.maskaq_kd}})
train_dataloader = {{_base_.maskaq_train_dataloader}}
optim_wrapper = {{_base_.maskaq_optim_wrapper}}
param_scheduler = {{_base_.maskaq_param_scheduler}}
train_cfg = {{_base_.maskaq_train_cfg}}
default_hooks = {{_base_.maskaq_default_hooks}}
