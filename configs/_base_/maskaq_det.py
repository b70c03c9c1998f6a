# MaskAQ on detection (mmdet): the synthetic training set (see maskaq_runtime.py for use).
_base_ = ['./maskaq_runtime.py']

maskaq_train_dataloader = dict(
    _delete_=True,
    batch_size={{_base_.maskaq_batch_size}},
    num_workers=2,
    persistent_workers=False,  # workers re-read the bank after a refresh
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='MaskAQSyntheticDataset',
        task='det',
        num_samples={{_base_.maskaq_num_samples}},
        bank_dir=None))  # None: <work_dir>/sample_bank
# Detection KD: normalised MSE of the backbone features, KL (T = 1) on the classification
# logits and L1 on the box regressions of dense heads, and L_mssim (lambda = 10).
maskaq_kd = dict(feat=1.0, task=1.0, mssim=10.0, temperature=1.0)
