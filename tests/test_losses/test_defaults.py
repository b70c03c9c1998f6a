"""The QAT loss defaults are stated once (maskaq_plugin/losses/defaults.py) and every
entry point reads them."""
import inspect

from maskaq_plugin.losses import (DetectionKDLoss, KDLoss, MaskedAttentionSSIMLoss,
                                  PixelKLLoss, defaults, detection_kd_loss)
from maskaq_plugin.losses.functional import kd_kl_loss, masked_attention_ssim, pixel_kl_loss
from maskaq_plugin.qat import (NonFiniteGuard, classification_qat_loss, distill_losses_for,
                               flat_view, run_classification_qat)


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
    for fn in (kd_kl_loss, KDLoss):
        assert _defaults(fn)['temperature'] == d.KD_TEMPERATURE
    for fn in (pixel_kl_loss, PixelKLLoss, DetectionKDLoss, detection_kd_loss.binary_kl,
               detection_kd_loss.dense_head_kd, detection_kd_loss.two_stage_kd,
               detection_kd_loss.detection_kd):
        assert _defaults(fn)['temperature'] == d.DENSE_KD_TEMPERATURE
    # the Stage 2 loss configs of both entry points (API: 'cls'; wrapper: its task)
    kd = {task: flat_view(distill_losses_for(task)) for task in ('cls', 'det', 'seg')}
    assert kd['cls']['temperature'] == d.KD_TEMPERATURE
    assert kd['det']['temperature'] == kd['seg']['temperature'] == d.DENSE_KD_TEMPERATURE
    assert {task['mssim'] for task in kd.values()} == {d.MSSIM_WEIGHT}
    assert all(task.items() >= mssim.items() for task in kd.values())
    assert flat_view(distill_losses_for('cls', 'mimiq'))['w_high'] == d.W_LOW
    assert flat_view(distill_losses_for('cls', 'psaq'))['mssim'] == 0.0
    assert _defaults(NonFiniteGuard)['max_steps'] == d.MAX_NONFINITE_STEPS
    assert _defaults(run_classification_qat)['max_nonfinite_steps'] == d.MAX_NONFINITE_STEPS
