# MaskAQ on classification (mmpretrain): the synthetic training set (see maskaq_runtime.py for use).
_base_ = ['./maskaq_runtime.py']

maskaq_train_dataloader = dict(
    _delete_=True,
    batch_size={{_base_.maskaq_batch_size}},
    num_workers=2,
    persistent_workers=False,  # workers re-read the bank after a refresh
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='MaskAQSyntheticDataset',
        task='cls',
        num_samples={{_base_.maskaq_num_samples}},
        bank_dir=None))  # None: <work_dir>/sample_bank
# The student's classifier head is quantized too (input and weight of its Linear layers, at
# the model's w_bits / a_bits) and trained with the backbone, as in the paper: that is
# MaskAQAlgorithm's default for classifiers (quantize_head=None -> True for 'cls', False
# for 'det' / 'seg'); set model.quantize_head=False to keep it full precision and frozen.
# Every teacher / student module runs in eval mode during QAT (no dropout / drop path).
# Classification KD: L_Q = T^2 KL(softmax(z_F / T) || softmax(z_Q / T)) + 10 L_mssim, T = 5.
maskaq_kd = dict(feat=0.0, task=1.0, mssim=10.0, temperature=5.0)
