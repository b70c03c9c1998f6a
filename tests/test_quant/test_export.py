"""Strip, ONNX and OpenVINO exports: they load, run and match the torch fake-quant model.

Tolerances are relative L2 errors ``‖out − ref‖ / ‖ref‖`` measured on these tiny random
models (3 seeds; ViT and Swin): at W8A8 NNCF's exported FakeQuantize/QDQ round exact ties
differently from its training kernel, and a few 1-LSB flips propagate: ≤ 1.0e-2 measured,
3e-2 allowed. Below 8 bits ties are rarer and OpenVINO (with OPENVINO_CPU_CONFIG) matches
to ≤ 4e-7 measured, 1e-5 allowed. OpenVINO's CPU defaults gave 0.07-0.9 at W4A4/W3A3.

The CPU's instruction set matters for OpenVINO's int8 kernels (it runs 8-bit FakeQuantize
+ MatMul patterns in int8): on an AMD EPYC with AVX2 and no VNNI (no avx512_vnni,
avx_vnni or amx) the W8A8 IR differed by 0.10 (recipe 'nncf') and 0.144 (recipe 'lsq')
from torch, with every setting of OPENVINO_CPU_CONFIG, and the W4A4 IR matched even with
dynamic quantization on (it needs VNNI). The likely cause is AVX2's u8×s8 multiply-add
into saturating int16 pairs; measured, not proved. So the W8A8 OpenVINO bound is 3e-2
with VNNI and 0.25 without, and the "defaults do not match" checks need VNNI / bf16.
"""
import os
import sys

import numpy as np
import onnx
import pytest
import torch
from quant_models import TinyMHA, images, tiny_vit
from torch import nn

import maskaq_plugin.quant.export as export_module
from maskaq_plugin.attention import make_attention_explicit
from maskaq_plugin.quant import (ExportMismatchError, QuantScheme, export_onnx,
                                 export_openvino, quantize_model, quantizer_info,
                                 strip_quantized)
from maskaq_plugin.quant.export import compile_openvino, openvino_core, relative_error
from maskaq_plugin.quant.inspect import iter_quantizers
from maskaq_plugin.quant.ir_weights import (WeightReport, compare_ir_weights, ir_weights,
                                            torch_weights)

TOL_8BIT, TOL_LOW_BIT = 3e-2, 1e-5


def _cpu_flags():
    try:
        with open('/proc/cpuinfo') as f:
            return next((line.split(':', 1)[1].split() for line in f
                         if line.startswith('flags')), [])
    except OSError:
        return []


HAS_VNNI = bool({'avx512_vnni', 'avx_vnni', 'amx_int8'} & set(_cpu_flags()))
TOL_8BIT_OPENVINO = TOL_8BIT if HAS_VNNI else 0.25  # see the module docstring


class FeaturesAndLogits(nn.Module):
    """Tuple output, like an OpenMMLab backbone's multi-level features."""

    def __init__(self, vit):
        super().__init__()
        self.vit = vit

    def forward(self, x):
        tokens = self.vit.forward_features(x)
        return tokens, self.vit.forward_head(tokens)


def _torch(q, x):
    with torch.no_grad():
        out = q(x)
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def _ov(compiled, x):
    result = compiled(x.numpy())
    return [result[o] for o in compiled.outputs]


@pytest.fixture(scope='module', params=['lsq', 'nncf'])
def q_w4a4(vit, x, request):
    return quantize_model(vit, QuantScheme(4, 4, recipe=request.param), x).eval()


def test_strip_folds_weights_and_keeps_activation_fake_quant(q_w4a4, x):
    stripped = strip_quantized(q_w4a4, x)
    with torch.no_grad():
        assert torch.equal(stripped(x), q_w4a4(x))
    kinds = [i.kind for i in quantizer_info(stripped)]
    assert kinds == ['activation'] * 17  # 10 weight quantizers folded, no torchao needed
    w = stripped.blocks[0].attn.qkv.weight
    narrow = q_w4a4.maskaq_scheme.recipe == 'nncf'  # 'nncf' weights: narrow range
    assert max(row.unique().numel() for row in w) <= (15 if narrow else 16)  # its 4-bit grid
    assert len(quantizer_info(q_w4a4)) == 27  # the original is untouched
    assert 'torchao' not in sys.modules


def test_strip_keeps_quantizers_of_computed_weights():
    model, x = TinyMHA().eval(), images(2)
    make_attention_explicit(model)
    q = quantize_model(model, QuantScheme(4, 4), x)
    stripped = strip_quantized(q, x)
    left = {i.op for i in quantizer_info(stripped) if i.kind == 'weight'}
    assert left == {'attn/linear/0', 'attn/linear/1', 'attn/linear/2'}  # in_proj chunks
    with torch.no_grad():
        assert torch.equal(stripped(x), q(x))


def test_nncf_strip_needs_torchao(q_w4a4, x):
    """Why strip_quantized does not call nncf.strip (it needs torchao and strips only 8-bit)."""
    try:
        import torchao  # noqa: F401
    except ImportError:
        import nncf
        with pytest.raises(ModuleNotFoundError, match='torchao'):
            nncf.strip(q_w4a4, example_input=x)
    else:
        pytest.skip('torchao is installed')


def test_onnx_w8a8_is_qdq_and_runs_in_onnxruntime(vit, x, tmp_path):
    import onnxruntime as ort
    q = quantize_model(vit, QuantScheme(8, 8), x).eval()
    path = export_onnx(q, x, str(tmp_path / 'w8a8.onnx'))
    graph = onnx.load(path)
    assert graph.opset_import[0].version == 17  # TorchScript exporter (dynamo=False)
    ops = {n.op_type for n in graph.graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= ops and 'FakeQuantize' not in ops
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert relative_error(out, _torch(q, x)) < TOL_8BIT


def test_onnx_low_bit_is_fake_quantize_read_by_openvino(q_w4a4, x, tmp_path):
    with pytest.raises(ValueError, match='8-bit only.*qdq=False'):
        export_onnx(q_w4a4, x, str(tmp_path / 'bad.onnx'), qdq=True)
    path = export_onnx(q_w4a4, x, str(tmp_path / 'w4a4.onnx'))
    nodes = [n for n in onnx.load(path).graph.node if n.op_type == 'FakeQuantize']
    assert len(nodes) == 27 and {n.domain for n in nodes} == {'org.openvinotoolkit'}
    levels = sorted(a.i for n in nodes for a in n.attribute if a.name == 'levels')
    if q_w4a4.maskaq_scheme.recipe == 'nncf':  # narrow-range weights, full-range activations
        assert levels == [15] * 10 + [16] * 17
    else:  # the authors' grids: [-8, 7] weights, 16-level activations
        assert levels == [16] * 27
    assert relative_error(_ov(compile_openvino(path), x), _torch(q_w4a4, x)) < TOL_LOW_BIT


def test_openvino_w8a8_tuple_outputs(x, tmp_path):
    model = FeaturesAndLogits(tiny_vit(seed=2)).eval()
    q = quantize_model(model, QuantScheme(8, 8), x).eval()
    xml = export_openvino(q, x, str(tmp_path / 'w8a8.xml'), rtol=TOL_8BIT_OPENVINO)
    assert os.path.exists(xml) and os.path.exists(xml[:-4] + '.bin')
    out = _ov(compile_openvino(xml), x)
    assert [o.shape for o in out] == [(4, 17, 32), (4, 10)]
    assert relative_error(out, _torch(q, x)) < TOL_8BIT_OPENVINO


def test_openvino_w4a4_matches_and_cpu_defaults_do_not(q_w4a4, x, tmp_path):
    """The W4A4 export gap once left unexplained: OpenVINO's CPU defaults, not the export."""
    xml = export_openvino(q_w4a4, x, str(tmp_path / 'w4a4.xml'))
    ref = _torch(q_w4a4, x)
    assert relative_error(_ov(compile_openvino(xml), x), ref) < TOL_LOW_BIT
    core = openvino_core()
    # Dynamic int8 re-quantization of FullyConnected inputs (group 32), even in f32:
    # (it needs VNNI: on an AVX2-only CPU it is not applied and the IR matches).
    dyn = core.compile_model(xml, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32',
                                          'DYNAMIC_QUANTIZATION_GROUP_SIZE': 32})
    dyn_error = relative_error(_ov(dyn, x), ref)
    assert dyn_error > 5e-2 if HAS_VNNI else dyn_error < TOL_LOW_BIT
    if 'BF16' in core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'):
        bf16 = core.compile_model(xml, 'CPU', {'INFERENCE_PRECISION_HINT': 'bf16'})
        assert relative_error(_ov(bf16, x), ref) > 5e-2


def test_openvino_export_refuses_a_mismatch(q_w4a4, x, tmp_path, monkeypatch):
    # Whatever the CPU: references off by 10 % must be refused at rtol 5e-2.
    flat = export_module._flat_outputs
    monkeypatch.setattr(export_module, '_flat_outputs', lambda out: [o * 1.1 for o in flat(out)])
    with pytest.raises(ExportMismatchError, match='relative L2 error 0.0909'):
        export_openvino(q_w4a4, x, str(tmp_path / 'bad.xml'))


@pytest.mark.parametrize('floor,accepted', [(0.07, True), (0.05, False)])
def test_openvino_export_error_within_the_models_noise_floor(q_w4a4, x, tmp_path, monkeypatch,
                                                             floor, accepted):
    # 9.09 % off: accepted iff within NOISE_FLOOR_MARGIN (1.5) x the model's noise floor.
    flat = export_module._flat_outputs
    monkeypatch.setattr(export_module, '_flat_outputs', lambda out: [o * 1.1 for o in flat(out)])
    monkeypatch.setattr(export_module, 'output_noise_floor', lambda *a, **k: floor)
    path = str(tmp_path / 'noisy.xml')
    if accepted:
        with pytest.warns(RuntimeWarning, match=r'0\.0909 > 0\.05 .* up to 0\.07 .*noise floor'):
            export_openvino(q_w4a4, x, path)
    else:
        with pytest.raises(ExportMismatchError, match=r'up to 0\.05 .*not float rounding'):
            export_openvino(q_w4a4, x, path)


def test_output_noise_floor_separates_smooth_and_chaotic_models():
    x = torch.rand(2, 8) + 0.5
    smooth = nn.Linear(8, 4).eval()
    with torch.no_grad():
        ref = export_module._flat_outputs(smooth(x))
    assert export_module.output_noise_floor(smooth, (x,), ref) < 1e-5

    class Chaotic(nn.Module):  # every output flips under a 1e-6 relative change of x
        def forward(self, v):
            return torch.sign(torch.sin(v.double() * 1e9)).float()

    with torch.no_grad():
        ref = export_module._flat_outputs(Chaotic()(x))
    assert export_module.output_noise_floor(Chaotic(), (x,), ref) > 0.5


def test_export_leaves_the_model_in_training_mode(q_w4a4, x, tmp_path):
    q_w4a4.train()
    try:
        export_onnx(q_w4a4, x, str(tmp_path / 'm.onnx'))
        assert q_w4a4.training
        modes = {q._export_mode.value for _, q in iter_quantizers(q_w4a4)}
        assert modes == {'fake_quantize'}
        np.testing.assert_equal(_torch(q_w4a4.eval(), x), _torch(q_w4a4, x))
    finally:
        q_w4a4.eval()


_SIGNAL_AFTER_TWO_COMPILES = r'''
import signal, sys, threading
import numpy as np
import openvino.opset13 as ops
import openvino as ov
from maskaq_plugin.quant.export import compile_openvino

def tiny():
    x = ops.parameter([1, 4], np.float32, name='x')
    return ov.Model([ops.relu(x)], [x], 'tiny')

a = compile_openvino(tiny())
b = compile_openvino(tiny())
a([np.ones((1, 4), np.float32)])
del a, b  # the older compiled model released first
signal.signal(signal.SIGUSR1, lambda *_: None)
signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
print('alive after the signal')
'''


def test_compiles_leave_a_valid_signal_stack(tmp_path):
    """Two compiles, the older model released first, then a signal with a Python handler.

    With one ``openvino.Core`` per compile, OpenVINO 2026.4.1's CPU plugin left the main
    thread on an unmapped alternate signal stack here and the signal killed the process
    (SIGSEGV, 5/5 runs): the crash that made tools/run_tests.py isolate test folders.
    ``compile_openvino`` shares one Core (``openvino_core``), so the process survives.
    """
    import subprocess
    script = tmp_path / 'two_compiles.py'
    script.write_text(_SIGNAL_AFTER_TWO_COMPILES)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f'rc {proc.returncode}\n{proc.stdout}\n{proc.stderr[-2000:]}'
    assert 'alive after the signal' in proc.stdout


# ------------------------------------------------------------ 4-bit weights in the IR
# Measured on these tiny models (ViT seeds 0-1, Swin, TinyMHA; W3-W8, both recipes):
# every IR code equals ours, dequantized weights within 3e-8 (weights ~0.1-0.5), outputs
# within 1e-6 except W4A8 'nncf' (NNCF's 8-bit activation export FakeQuantize, as at
# W8A8: 2.0e-2), and the W4 .bin is 0.572x the W8 one (biases, LayerNorms, scales: f32).
TOL_IR_WEIGHT = 1e-7  # |dequantized IR weight - torch w_q|, absolute


@pytest.fixture(scope='module', params=[(4, 8, 'lsq'), (4, 8, 'nncf'), (4, 4, 'lsq'),
                                        (4, 4, 'nncf')], ids=lambda p: f'w{p[0]}a{p[1]}-{p[2]}')
def w4_ir(vit, x, tmp_path_factory, request):
    w_bits, a_bits, recipe = request.param
    q = quantize_model(vit, QuantScheme(w_bits, a_bits, recipe=recipe), x).eval()
    xml = export_openvino(q, x, str(tmp_path_factory.mktemp('ir') / 'w4.xml'))  # checked
    return q, xml


def test_i4_constants_decode_exactly():
    import openvino as ov
    from maskaq_plugin.quant.ir_weights import _constant_values
    codes = [-8, -1, 0, 1, 7, 3, 5]  # odd count: the last byte is half used
    i4 = ov.op.Constant(ov.Type.i4, ov.Shape([7]), codes)
    np.testing.assert_array_equal(_constant_values(i4), codes)
    u4 = ov.op.Constant(ov.Type.u4, ov.Shape([7]), [c % 16 for c in codes])
    np.testing.assert_array_equal(_constant_values(u4), [8, 15, 0, 1, 7, 3, 5])


def test_openvino_w4_ir_stores_our_4bit_codes(w4_ir, x):
    q, xml = w4_ir
    ov_model = openvino_core().read_model(xml)
    stored = ir_weights(ov_model)  # every MatMul/Convolution weight that is a constant
    assert len(stored) == 10 and {w.element_type for w in stored} == {'i4'}
    assert all(w.zero_point is None for w in stored)  # symmetric: Convert -> Multiply
    assert {w.op.split('/')[0] for w in stored} == {
        '__module.patch_embed.proj', '__module.head',
        *(f'__module.blocks.{b}.{m}' for b in (0, 1)
          for m in ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'))}
    report = compare_ir_weights(ov_model, q, x)
    assert report.problems == [] and len(report.matched) == 10
    assert set(report.element_types.values()) == {'i4'}
    assert report.code_mismatches == 0 and report.max_abs_error < TOL_IR_WEIGHT
    narrow = q.maskaq_scheme.recipe == 'nncf'
    codes = np.concatenate([w.codes.ravel() for w in stored])
    assert (codes.min(), codes.max()) == ((-7, 7) if narrow else (-8, 7))
    # Outputs: W4A8 'nncf' keeps NNCF's 8-bit activation tie flips (module docstring).
    a8_nncf = q.maskaq_scheme.a_bits == 8 and narrow
    tol = TOL_8BIT if a8_nncf else TOL_LOW_BIT
    assert relative_error(_ov(compile_openvino(xml), x), _torch(q, x)) < tol


def test_openvino_w4_bin_is_smaller_than_w8(vit, x, tmp_path):
    q4 = quantize_model(vit, QuantScheme(4, 8), x).eval()
    q8 = quantize_model(vit, QuantScheme(8, 8), x).eval()
    xml4 = export_openvino(q4, x, str(tmp_path / 'w4a8.xml'))
    xml8 = export_openvino(q8, x, str(tmp_path / 'w8a8.xml'), rtol=TOL_8BIT_OPENVINO)
    assert {w.element_type for w in ir_weights(openvino_core().read_model(xml8))} == {'i8'}
    size4, size8 = (os.path.getsize(p[:-4] + '.bin') for p in (xml4, xml8))
    # 30.9k weights: 15.5 kB at 4 bits, 30.9 kB at 8; plus ~5 kB of f32 in both
    assert size4 / size8 < 0.6  # measured 0.572
    n_weights = sum(w.stored.size for w in ir_weights(openvino_core().read_model(xml4)))
    assert size8 - size4 == pytest.approx(n_weights / 2, abs=8)  # half a byte per weight


def test_weight_check_reports_weights_that_are_not_ours(vit, x, w4_ir):
    q, xml = w4_ir
    ov_model = openvino_core().read_model(xml)
    other = quantize_model(tiny_vit(seed=3), QuantScheme(4, 4), x).eval()
    report = compare_ir_weights(ov_model, other, x)
    assert len(report.problems) == 10 and not report.matched
    assert 'no IR weight equals its fake-quantized weight' in report.problems[0]
    w8 = quantize_model(vit, QuantScheme(8, 8, recipe=q.maskaq_scheme.recipe), x).eval()
    assert compare_ir_weights(ov_model, w8, x).problems  # 8-bit grid: not these values
    records = torch_weights(q, x)
    assert len(records) == 10 and {r.num_bits for r in records} == {4}


def test_openvino_export_refuses_float_weights(q_w4a4, x, tmp_path, monkeypatch):
    bad = WeightReport(problems=['blocks/0/attn/qkv: stored as f32, not i4'])
    monkeypatch.setattr(export_module, 'compare_ir_weights', lambda *a: bad)
    with pytest.raises(ExportMismatchError, match='integer codes: blocks/0/attn/qkv'):
        export_openvino(q_w4a4, x, str(tmp_path / 'bad.xml'))
