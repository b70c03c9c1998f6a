"""The QAT loss defaults are stated once (maskaq_plugin/losses/defaults.py) and every
entry point reads them."""
import inspect

from maskaq_plugin import api
from maskaq_plugin.losses import KDLoss, MaskedAttentionSSIMLoss, PixelKLLoss, defaults
from maskaq_plugin.losses.functional import kd_kl_loss, masked_attention_ssim, pixel_kl_loss
from maskaq_plugin.models import maskaq_algorithm, task_distill
from maskaq_plugin.qat import classification_qat_loss


def _defaults(fn):
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_paper_values():
    """MaskAQ: T = 5, λ = 10, top 10 % of tokens at weight 2, the others at 1."""
    assert (defaults.KD_TEMPERATURE, defaults.MSSIM_WEIGHT) == (5.0, 10.0)
    assert (defaults.TOP_RATIO, defaults.W_HIGH, defaults.W_LOW) == (0.1, 2.0, 1.0)
    assert defaults.DENSE_KD_TEMPERATURE == 1.0


def test_every_entry_point_uses_them():
    d = defaults
    mssim = dict(top_ratio=d.TOP_RATIO, w_high=d.W_HIGH, w_low=d.W_LOW)
    assert _defaults(masked_attention_ssim).items() >= mssim.items()
    assert _defaults(MaskedAttentionSSIMLoss).items() >= dict(
        mssim, loss_weight=d.MSSIM_WEIGHT).items()
    assert _defaults(classification_qat_loss).items() >= dict(
        mssim, temperature=d.KD_TEMPERATURE, mssim_weight=d.MSSIM_WEIGHT).items()
    for fn in (kd_kl_loss, KDLoss, task_distill.classification_kd):
        assert _defaults(fn)['temperature'] == d.KD_TEMPERATURE
    for fn in (pixel_kl_loss, PixelKLLoss, task_distill.binary_kl, task_distill.dense_head_kd,
               task_distill.two_stage_kd, task_distill.detection_kd,
               task_distill.segmentation_kd):
        assert _defaults(fn)['temperature'] == d.DENSE_KD_TEMPERATURE
    assert api.QAT_LOSS['maskaq'] == dict(mssim_weight=d.MSSIM_WEIGHT, w_high=d.W_HIGH)
    assert api.QAT_LOSS['mimiq'] == dict(mssim_weight=d.MSSIM_WEIGHT, w_high=d.W_LOW)
    kd = maskaq_algorithm.KD_DEFAULTS
    assert kd['cls']['temperature'] == d.KD_TEMPERATURE
    assert kd['det']['temperature'] == kd['seg']['temperature'] == d.DENSE_KD_TEMPERATURE
    assert {task['mssim'] for task in kd.values()} == {d.MSSIM_WEIGHT}
