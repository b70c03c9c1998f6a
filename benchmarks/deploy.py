"""Deployment: the W8A8 and W4A8 backbones as OpenVINO models vs their FP32 model.

For each backbone: the FP32 IR of the plain timm model (``openvino.convert_model``,
uncompressed), and the W8A8 and W4A8 students (:func:`maskaq_plugin.quant.quantize_model`,
calibrated on noise) exported with :func:`maskaq_plugin.quant.export_openvino`
(activation FakeQuantize nodes; weights stored as ``i8`` / ``i4`` codes with a
``Convert → Multiply`` decompression, read back with
:func:`maskaq_plugin.quant.ir_weights.ir_weights`). OpenVINO's CPU plugin runs
FakeQuantize IRs in INT8 where its low-precision transformations apply; which precision
each layer ran in is read back from the compiled model (``get_runtime_model()``, rt_info
``layerType`` / ``runtimePrecision``).

Latency: batch 1, OpenVINO CPU, the same ``INFERENCE_NUM_THREADS`` and one stream for
every model, single inferences interleaved between the models, median; with
:data:`~maskaq_plugin.quant.export.OPENVINO_CPU_CONFIG` (f32 precision, no dynamic
quantization: what reproduces the torch model) and with OpenVINO's defaults. Accuracy:
outputs of the INT8 model vs the torch fake-quant model on held-out noise images
(relative L2 error, top-1 agreement).
"""
import collections
import os
import os.path as osp
import statistics
import tempfile
import time

import numpy as np
import torch

from maskaq_plugin.quant import QuantScheme, export_openvino, quantize_model
from maskaq_plugin.quant.export import OPENVINO_CPU_CONFIG, openvino_core, relative_error
from maskaq_plugin.quant.ir_weights import ir_weights

from .common import tiny_deit, tiny_swin

MODELS = {
    'tiny DeiT (112 px, patch 8, dim 96, depth 4, 3 heads)': lambda e: tiny_deit(
        112, explicit=e),
    'tiny Swin (112 px, patch 4, window 7, dim 48, depths 2-2-2, heads 3-6-12)':
        lambda e: tiny_swin(112, explicit=e, window_size=7),
    'DeiT-Tiny (224 px, patch 16, dim 192, depth 12, 3 heads)': lambda e: tiny_deit(
        224, num_classes=1000, explicit=e, patch_size=16, embed_dim=192, depth=12),
}
COMPUTE = ('FullyConnected', 'MatMul', 'Convolution', 'Subgraph')  # Subgraph: fused MHA
SCHEMES = {'W8A8': QuantScheme(8, 8), 'W4A8': QuantScheme(4, 8)}


def runtime_precisions(compiled) -> dict:
    """``{layerType: {runtimePrecision: count}}`` of the compute layers that ran."""
    counts = collections.defaultdict(collections.Counter)
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info['layerType'].astype(str)
        if kind in COMPUTE:
            counts[kind][info['runtimePrecision'].astype(str)] += 1
    return {k: dict(v) for k, v in counts.items()}


def _compile(path, threads, accurate):
    config = dict(OPENVINO_CPU_CONFIG) if accurate else {}
    config.update(INFERENCE_NUM_THREADS=threads, NUM_STREAMS=1, PERFORMANCE_HINT='LATENCY')
    return openvino_core().compile_model(path, 'CPU', config)  # one Core: see its doc


def _latency(requests: dict, x: np.ndarray, repeats: int) -> dict:
    names = list(requests)
    for name in names:  # warm up
        for _ in range(5):
            requests[name].infer([x])
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            requests[name].infer([x])
            times[name].append(time.perf_counter() - start)
    return times


def stored_weight_types(path) -> dict:
    """``{element type: count}`` of the MatMul / Convolution weight constants of an IR."""
    types = collections.Counter(w.element_type for w in ir_weights(
        openvino_core().read_model(path)))
    return dict(sorted(types.items()))


def _export(label, build, workdir):
    """Returns ``{kind: (torch model or None, xml)}`` for FP32 and each of SCHEMES."""
    import openvino as ov
    size = (1, 3, *build(False).patch_embed.img_size)
    calib = torch.randn(16, *size[1:], generator=torch.Generator().manual_seed(0))
    fp = build(False)  # plain timm model (fused attention), what one deploys in FP32
    stem = osp.join(workdir, label.split(' (')[0].replace(' ', '_'))
    with torch.no_grad():
        ov.save_model(ov.convert_model(fp, example_input=calib[:1]), stem + '_fp32.xml',
                      compress_to_fp16=False)
    irs = {'FP32': (None, stem + '_fp32.xml')}
    for kind, scheme in SCHEMES.items():
        q = quantize_model(build(True), scheme, calib[:1], calib_inputs=calib)
        # raises if the IR's outputs or stored weight codes are off; rtol 0.25: INT8
        # kernels without VNNI (tests/test_quant/test_export.py); the table reports it
        xml = export_openvino(q, calib[:1], f'{stem}_{kind.lower()}.xml', rtol=0.25)
        irs[kind] = (q, xml)
    return irs, size


def run(*, repeats: int = 200, threads: int = 1) -> dict:
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for label, build in MODELS.items():
            irs, size = _export(label, build, workdir)
            compiled = {f'{kind} ({cfg})': _compile(path, threads, cfg == 'accurate')
                        for kind, (_, path) in irs.items()
                        for cfg in ('accurate', 'defaults')}
            x = torch.randn(*size, generator=torch.Generator().manual_seed(1))
            times = _latency({k: c.create_infer_request() for k, c in compiled.items()},
                             x.numpy(), repeats)
            images = torch.randn(8, *size[1:], generator=torch.Generator().manual_seed(2))
            errors, agree = {}, {}
            for name, comp in compiled.items():
                q = irs[name.split(' (')[0]][0]
                if q is None:
                    continue
                with torch.no_grad():
                    ref = q(images).numpy()
                out = np.concatenate([comp([im[None].numpy()])[comp.outputs[0]]
                                      for im in images])
                errors[name] = relative_error([out], [ref])
                agree[name] = float((out.argmax(1) == ref.argmax(1)).mean())
            results.append(dict(
                model=label, repeats=repeats, threads=threads,
                median_ms={k: statistics.median(v) * 1e3 for k, v in times.items()},
                speedup={f'{kind} ({cfg})': statistics.median(
                    a / b for a, b in zip(times[f'FP32 ({cfg})'], times[f'{kind} ({cfg})']))
                    for kind in SCHEMES for cfg in ('accurate', 'defaults')},
                bin_mib={kind: os.path.getsize(xml[:-4] + '.bin') / 2**20
                         for kind, (_, xml) in irs.items()},
                weights={kind: stored_weight_types(xml) for kind, (_, xml) in irs.items()},
                precisions={k: runtime_precisions(c) for k, c in compiled.items()},
                rel_error=errors, top1_agreement=agree))
    return dict(models=results, accurate_config=OPENVINO_CPU_CONFIG)


def _fmt_prec(prec: dict) -> str:
    return ', '.join(f'{kind} ' + '/'.join(f'{n}×{p}' for p, n in sorted(v.items()))
                     for kind, v in sorted(prec.items()))


def markdown(res: dict, command: str, machine: str) -> str:
    from .common import table
    rows, prec_rows = [], []
    for m in res['models']:
        short = m['model'].split(' (')[0]
        for name, med in m['median_ms'].items():
            kind, cfg = name.split(' (')
            cfg = cfg.rstrip(')')
            speed = '1 (reference)' if kind == 'FP32' else f'{m["speedup"][name]:.2f}'
            err = f'{m["rel_error"][name]:.2e}' if name in m['rel_error'] else ''
            agree = f'{m["top1_agreement"][name]:.0%}' if name in m['top1_agreement'] else ''
            stored = ', '.join(f'{n}×{t}' for t, n in m['weights'][kind].items())
            rows.append([short, kind, cfg, f'{med:.2f}', speed,
                         f'{m["bin_mib"][kind]:.2f}', stored, err, agree])
            prec_rows.append([short, name, _fmt_prec(m['precisions'][name])])
    m0 = res['models'][0]
    tab = table(['model', 'IR', 'CPU config', f'latency ms (median of {m0["repeats"]})',
                 'FP32 time ÷ this (paired median)', '.bin MiB', 'weights stored as',
                 'rel. L2 error vs torch fake-quant', 'top-1 agreement (8 images)'], rows)
    prec = table(['model', 'compiled model', 'compute layers by runtimePrecision'], prec_rows)
    return (f'Command: `{command}`\n\nMachine: {machine}\n\n'
            f'Batch 1, OpenVINO CPU plugin, `INFERENCE_NUM_THREADS={m0["threads"]}`, one '
            f'stream, latency hint; single inferences interleaved between the six compiled '
            f'models. "accurate" = `OPENVINO_CPU_CONFIG` {res["accurate_config"]} (f32 '
            f'wherever a layer is not INT8, no dynamic quantization: reproduces the torch '
            f'model); "defaults" = OpenVINO\'s defaults (bf16 on a CPU that has it, dynamic '
            f'quantization). FP32 = the plain timm model converted by OpenVINO; W8A8 and '
            f'W4A8 = `export_openvino` of the student (recipe \'lsq\', calibrated on noise): '
            f'activation FakeQuantize nodes, weights stored as integer codes (i8 / i4, '
            f'"weights stored as" counts the MatMul/Convolution weight constants; the '
            f'attention matmuls have none). '
            f'The models are randomly initialised: latency, sizes and layer precisions do '
            f'not depend on the weights; the errors (8 noise images) are indicative only. '
            f'Where the CPU has bf16, the FP32 IR runs in bf16 in the "defaults" rows (table '
            f'below), so that ratio is INT8 vs bf16.\n\n{tab}\n\n'
            f'Precision each compute layer ran in (`compiled.get_runtime_model()`, rt_info '
            f'`runtimePrecision`; i8/u8 = INT8 kernels; Subgraph = OpenVINO\'s fused '
            f'attention (MHA) kernels; the patch-embedding Convolution stays FP by design, '
            f'its input is not quantized):\n\n{prec}\n')


def plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    models = res['models']
    names = list(models[0]['median_ms'])
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(models))]
        ys = [m['median_ms'][name] for m in models]
        ax.bar_label(ax.bar(xs, ys, width, label=name), fmt='%.1f', fontsize=7)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(models))])
    ax.set_xticklabels([m['model'].split(' (')[0] for m in models])
    ax.set_ylabel('latency, ms (batch 1, lower is better)')
    ax.set_yscale('log')
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_title(f'OpenVINO CPU, {models[0]["threads"]} thread(s)')
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
