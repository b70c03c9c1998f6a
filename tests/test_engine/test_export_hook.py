"""MaskAQExportHook / export_quantized on tiny real mmseg and mmdet models (CPU)."""
import os.path as osp
import sys
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.registry import HOOKS, MODELS

import maskaq_plugin  # noqa: F401
from maskaq_plugin.engine.hooks import MaskAQExportHook
from maskaq_plugin.models.export import load_quantized_student
from maskaq_plugin.quant.export import compile_openvino, relative_error

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'test_models'))
import tiny_archs  # noqa: E402

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def _algo(arch, a_bits=8):
    torch.manual_seed(0)
    return MODELS.build(dict(type='MaskAQAlgorithm', architecture=arch(), w_bits=4,
                             a_bits=a_bits, input_size=(3, 64, 64),
                             allow_random_teacher=True)).eval()


def _runner(algo, work_dir):
    return SimpleNamespace(model=algo, work_dir=str(work_dir),
                           logger=MMLogger.get_current_instance())


@pytest.fixture(scope='module')
def upernet_export(tmp_path_factory):
    algo = _algo(tiny_archs.upernet_swin)
    work = tmp_path_factory.mktemp('upernet')
    hook = HOOKS.build(dict(type='MaskAQExportHook'))
    hook.after_train(_runner(algo, work))
    return algo, work, hook.exported


def test_hook_writes_checkpoint_onnx_and_openvino(upernet_export):
    _, work, exported = upernet_export
    assert set(exported) == {'checkpoint', 'backbone.onnx', 'backbone.xml', 'model.onnx',
                             'model.xml'}
    for path in exported.values():
        assert osp.isfile(path) and osp.dirname(path) == str(work)
    state = torch.load(exported['checkpoint'], weights_only=True)
    assert state['meta'] == dict(w_bits=4, a_bits=8, input_size=[3, 64, 64], task='seg',
                                 architecture='EncoderDecoder',
                                 backbone_type='SwinTransformer', head_scheme=None)
    assert state['backbone']['format'] == 'maskaq-nncf-v1'
    assert isinstance(state['backbone']['nncf_config'], str)  # JSON, not pickled objects
    assert not any(k.startswith('backbone.') for k in state['state_dict'])


def test_quantized_student_checkpoint_rebuilds_the_student(upernet_export):
    algo, _, exported = upernet_export
    host = MODELS.build(tiny_archs.upernet_swin())
    student = load_quantized_student(host, exported['checkpoint']).eval()
    with torch.no_grad():
        ref = algo.student(X, None, mode='tensor')
        out = student(X, None, mode='tensor')
    torch.testing.assert_close(out, ref)


def test_classifier_with_quantized_head_round_trips(tmp_path):
    """A classifier's quantized head (its layers' quantizers) is rebuilt from the file."""
    from maskaq_plugin.models.export import export_quantized
    from maskaq_plugin.quant import quantizer_info
    algo = _algo(tiny_archs.deit_tiny_cls, a_bits=4)
    assert algo.quantize_head
    with torch.no_grad():  # move the head's ranges away from a fresh calibration
        for _, q in [(n, m) for n, m in algo.student.head.named_modules()
                     if type(m).__name__ == 'LSQActivationQuantizer']:
            q.step.mul_(1.5)
    exported, _ = export_quantized(algo, str(tmp_path), formats=())
    state = torch.load(exported['checkpoint'], weights_only=True)
    assert state['meta']['head_scheme']['keep_input_fp'] is False
    assert any('__nncf_hooks' in k for k in state['state_dict'])
    host = MODELS.build(tiny_archs.deit_tiny_cls())
    student = load_quantized_student(host, exported['checkpoint']).eval()
    assert len(quantizer_info(student.head)) == len(quantizer_info(algo.student.head)) == 2
    with torch.no_grad():
        ref = algo.student(X, None, mode='tensor')
        out = student(X, None, mode='tensor')
    torch.testing.assert_close(out, ref)


def test_openvino_backbone_and_model_match_torch(upernet_export):
    algo, _, exported = upernet_export
    with torch.no_grad():
        feats = [f.numpy() for f in algo.student.backbone(X[:1])]
        logits = algo.student(X[:1], None, mode='tensor').numpy()
    for name, ref in (('backbone.xml', feats), ('model.xml', [logits])):
        compiled = compile_openvino(exported[name])
        out = compiled([X[:1].numpy()])
        err = relative_error([out[o] for o in compiled.outputs], ref)
        assert err < 5e-2, (name, err)


def test_two_stage_detector_exports_backbone_and_reports_the_skip(tmp_path):
    algo = _algo(tiny_archs.mask_rcnn_swin, a_bits=4)
    hook = MaskAQExportHook(formats=('onnx', ))
    hook.after_train(_runner(algo, tmp_path))
    assert set(hook.exported) == {'checkpoint', 'backbone.onnx'}
    assert list(hook.skipped) == ['model.onnx']  # the RoI stage needs image metas
    assert hook.skipped['model.onnx'].startswith('TypeError')
    import onnx
    nodes = {n.op_type for n in onnx.load(hook.exported['backbone.onnx']).graph.node}
    assert 'FakeQuantize' in nodes  # below 8 bits: OpenVINO FakeQuantize, not QDQ


def test_hook_validates_its_arguments():
    with pytest.raises(ValueError, match="'tflite'"):
        MaskAQExportHook(formats=('onnx', 'tflite'))
    with pytest.raises(TypeError, match='MaskAQAlgorithm'):
        MaskAQExportHook().after_train(_runner(torch.nn.Linear(1, 1), '/tmp'))


def test_noise_floor_acceptance_goes_to_the_runner_log(tmp_path, monkeypatch):
    """The export check's noise-floor warning reaches the MMEngine log (the run's log
    file), other warnings stay Python warnings."""
    import logging
    import warnings

    import maskaq_plugin.quant as quant
    calls = []

    def fake_export_openvino(module, example, path, **kwargs):
        calls.append(path)
        warnings.warn('OpenVINO IR x.xml: relative L2 error 0.08 > 0.05; accepted',
                      RuntimeWarning)
        warnings.warn('something else', UserWarning)

    monkeypatch.setattr(quant, 'export_openvino', fake_export_openvino)
    algo = _algo(tiny_archs.deit_tiny_cls)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        with pytest.warns(UserWarning, match='something else') as caught:
            MaskAQExportHook(formats=('openvino', ), full_model=False).after_train(
                _runner(algo, tmp_path))
    finally:
        logger.removeHandler(handler)
    assert len(calls) == 1
    assert not [w for w in caught if 'OpenVINO IR' in str(w.message)]
    logged = [r for r in records if 'relative L2 error 0.08' in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
