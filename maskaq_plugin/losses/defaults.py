"""The default hyper-parameters of the QAT (Stage 2) losses, stated once.

MaskAQ's values (docs/method.md, "Stage 2"; the authors' code): KD at temperature
T = 5 plus λ = 10 times ``L_mssim``, whose informative tokens (the top 10 %) weigh 2 and
the others 1. Every default of the package reads these names: the loss functions and
modules of :mod:`maskaq_plugin.losses`, the Stage 2 loss configurations below (what
:class:`~maskaq_plugin.qat.QATDistiller` builds from the registry, for
:func:`~maskaq_plugin.quantize_data_free` and :class:`~maskaq_plugin.models.MaskAQAlgorithm`
alike) and the non-finite-step policy of both entry points. Configs state their values
literally.
"""
MSSIM_WEIGHT = 10.0  # λ, weight of L_mssim
KD_TEMPERATURE = 5.0  # T of the classification logit KD
DENSE_KD_TEMPERATURE = 1.0  # T of the dense-task (det / seg) KD (ours)
TOP_RATIO = 0.1  # fraction of tokens weighted W_HIGH in L_mssim
W_HIGH = 2.0  # weight of the informative tokens (W_HIGH = W_LOW: MimiQ, unmasked)
W_LOW = 1.0  # weight of the other tokens
MAX_NONFINITE_STEPS = 10  # QAT steps in a row with a non-finite loss before the run stops

# The Stage 2 loss of each task, as MMRazor's ``distill_losses``: one registered loss per
# term (``feat``: backbone features, ``task``: task outputs, ``mssim``: L_mssim), built
# from MMEngine's ``MODELS``. A term whose ``loss_weight`` is 0 is not computed.
MSSIM_LOSS = dict(type='MaskedAttentionSSIMLoss', loss_weight=MSSIM_WEIGHT,
                  top_ratio=TOP_RATIO, w_high=W_HIGH, w_low=W_LOW, mask_mode='informative')
DISTILL_LOSSES = {
    'cls': dict(task=dict(type='KDLoss', temperature=KD_TEMPERATURE, loss_weight=1.0),
                mssim=MSSIM_LOSS),
    'det': dict(feat=dict(type='FeatureMSELoss', loss_weight=1.0),
                task=dict(type='DetectionKDLoss', temperature=DENSE_KD_TEMPERATURE,
                          loss_weight=1.0),
                mssim=MSSIM_LOSS),
    'seg': dict(feat=dict(type='FeatureMSELoss', loss_weight=1.0),
                task=dict(type='PixelKLLoss', temperature=DENSE_KD_TEMPERATURE,
                          loss_weight=1.0),
                mssim=MSSIM_LOSS),
}
# The baselines are configurations of that loss (docs/method.md, "What is compared
# against"): MimiQ weights every token alike, PSAQ-ViT and noise distil the task output only.
METHOD_LOSSES = {
    'maskaq': {},
    'mimiq': dict(mssim=dict(w_high=W_LOW)),
    'psaq': dict(mssim=dict(loss_weight=0.0)),
    'noise': dict(mssim=dict(loss_weight=0.0)),
}
