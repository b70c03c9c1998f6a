"""The API and the OpenMMLab wrapper compute the same Stage 2 loss terms.

Same teacher and student (a MaskAQAlgorithm's), same images and labels, same seed: the
loss of ``quantize_data_free``'s QAT step (:func:`classification_terms` on the
:class:`QATDistiller` of ``distill_losses_for('cls', method)``) and
``MaskAQAlgorithm.loss`` agree term by term, for MaskAQ and for a KD-only baseline.
"""
import pytest
import torch
from mmengine.registry import MODELS
from mmpretrain.structures import DataSample

import maskaq_plugin  # noqa: F401
import tiny_archs
from maskaq_plugin.qat import QATDistiller, classification_terms, distill_losses_for


@pytest.mark.parametrize('method,terms', [('maskaq', {'task', 'mssim'}),
                                          ('mimiq', {'task', 'mssim'}),
                                          ('psaq', {'task'})])
def test_api_and_wrapper_give_the_same_qat_loss_terms(method, terms):
    torch.manual_seed(0)
    kwargs = {} if method == 'maskaq' else dict(distill_losses=distill_losses_for('cls', method))
    algo = MODELS.build(dict(type='MaskAQAlgorithm', architecture=tiny_archs.deit_tiny_cls(),
                             w_bits=4, a_bits=8, input_size=(3, 64, 64),
                             allow_random_teacher=True, **kwargs))
    api_losses = distill_losses_for('cls', method)  # what quantize_data_free builds
    assert algo.distill_losses == api_losses
    algo.train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    samples = [DataSample(metainfo=dict(img_shape=(64, 64))).set_gt_label(i) for i in range(2)]
    torch.manual_seed(1)
    wrapper = algo.loss(x, samples)
    torch.manual_seed(1)
    api = classification_terms(QATDistiller(api_losses), algo.teacher, algo.student, x)
    assert set(api) == terms
    assert set(wrapper) == {f'distill.loss_{k}' for k in terms}
    for k in terms:
        torch.testing.assert_close(api[k], wrapper[f'distill.loss_{k}'], rtol=0, atol=1e-6)
        assert torch.isfinite(api[k]) and api[k] > 0
    # each path's gradient reaches the same student parameters with the same values
    grads = []
    for loss in (sum(api.values()), sum(wrapper.values())):
        algo.student.zero_grad()
        loss.backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in algo.student.named_parameters()
                      if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][n], rtol=0, atol=1e-6)
