"""The default hyper-parameters of the QAT (Stage 2) losses, stated once.

MaskAQ's values (docs/method.md, "Stage 2"; the authors' code): KD at temperature
T = 5 plus λ = 10 times ``L_mssim``, whose informative tokens (the top 10 %) weigh 2 and
the others 1. Every default of the package reads these names: the loss functions and
modules of :mod:`maskaq_plugin.losses`, the dense-task KD of
:mod:`maskaq_plugin.models.task_distill`,
:func:`~maskaq_plugin.qat.classification_qat_loss`, the per-method losses of
:func:`~maskaq_plugin.quantize_data_free` and the ``kd`` defaults of
:class:`~maskaq_plugin.models.MaskAQAlgorithm`. Configs state their values literally.
"""
MSSIM_WEIGHT = 10.0  # λ, weight of L_mssim
KD_TEMPERATURE = 5.0  # T of the classification logit KD
DENSE_KD_TEMPERATURE = 1.0  # T of the dense-task (det / seg) KD (ours)
TOP_RATIO = 0.1  # fraction of tokens weighted W_HIGH in L_mssim
W_HIGH = 2.0  # weight of the informative tokens (W_HIGH = W_LOW: MimiQ, unmasked)
W_LOW = 1.0  # weight of the other tokens
