"""Deployment: the W8A8 backbone as a real INT8 OpenVINO model vs its FP32 model.

For each backbone: the FP32 IR of the plain timm model (``openvino.convert_model``,
uncompressed), and the W8A8 student (:func:`maskaq_plugin.quant.quantize_model`,
calibrated on noise) exported with :func:`maskaq_plugin.quant.export_openvino`
(FakeQuantize IR). OpenVINO's CPU plugin runs FakeQuantize IRs in INT8 where its
low-precision transformations apply; which precision each layer ran in is read back from
the compiled model (``get_runtime_model()``, rt_info ``layerType`` / ``runtimePrecision``).

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


def _export(label, build, workdir):
    import openvino as ov
    size = (1, 3, *build(False).patch_embed.img_size)
    calib = torch.randn(16, *size[1:], generator=torch.Generator().manual_seed(0))
    fp = build(False)  # plain timm model (fused attention), what one deploys in FP32
    q = quantize_model(build(True), QuantScheme(8, 8), calib[:1], calib_inputs=calib)
    stem = osp.join(workdir, label.split(' (')[0].replace(' ', '_'))
    with torch.no_grad():
        ov.save_model(ov.convert_model(fp, example_input=calib[:1]), stem + '_fp32.xml',
                      compress_to_fp16=False)
    export_openvino(q, calib[:1], stem + '_w8a8.xml')  # raises if the IR is off
    return q, stem + '_fp32.xml', stem + '_w8a8.xml', size


def run(*, repeats: int = 200, threads: int = 1) -> dict:
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for label, build in MODELS.items():
            q, fp_xml, q_xml, size = _export(label, build, workdir)
            compiled = {f'{kind} ({cfg})': _compile(path, threads, cfg == 'accurate')
                        for kind, path in (('FP32', fp_xml), ('W8A8', q_xml))
                        for cfg in ('accurate', 'defaults')}
            x = torch.randn(*size, generator=torch.Generator().manual_seed(1))
            times = _latency({k: c.create_infer_request() for k, c in compiled.items()},
                             x.numpy(), repeats)
            images = torch.randn(8, *size[1:], generator=torch.Generator().manual_seed(2))
            with torch.no_grad():
                ref = q(images).numpy()
            errors, agree = {}, {}
            for name, comp in compiled.items():
                if name.startswith('W8A8'):
                    out = np.concatenate([comp([im[None].numpy()])[comp.outputs[0]]
                                          for im in images])
                    errors[name] = relative_error([out], [ref])
                    agree[name] = float((out.argmax(1) == ref.argmax(1)).mean())
            results.append(dict(
                model=label, repeats=repeats, threads=threads,
                median_ms={k: statistics.median(v) * 1e3 for k, v in times.items()},
                speedup={cfg: statistics.median(
                    a / b for a, b in zip(times[f'FP32 ({cfg})'], times[f'W8A8 ({cfg})']))
                    for cfg in ('accurate', 'defaults')},
                bin_mib={'FP32': os.path.getsize(fp_xml[:-4] + '.bin') / 2**20,
                         'W8A8': os.path.getsize(q_xml[:-4] + '.bin') / 2**20},
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
            speed = '1 (reference)' if kind == 'FP32' else f'{m["speedup"][cfg]:.2f}'
            err = f'{m["rel_error"][name]:.2e}' if name in m['rel_error'] else ''
            agree = f'{m["top1_agreement"][name]:.0%}' if name in m['top1_agreement'] else ''
            rows.append([short, kind, cfg, f'{med:.2f}', speed,
                         f'{m["bin_mib"][kind]:.2f}', err, agree])
            prec_rows.append([short, name, _fmt_prec(m['precisions'][name])])
    m0 = res['models'][0]
    tab = table(['model', 'IR', 'CPU config', f'latency ms (median of {m0["repeats"]})',
                 'FP32 time ÷ this (paired median)', '.bin MiB',
                 'rel. L2 error vs torch fake-quant', 'top-1 agreement (8 images)'], rows)
    prec = table(['model', 'compiled model', 'compute layers by runtimePrecision'], prec_rows)
    return (f'Command: `{command}`\n\nMachine: {machine}\n\n'
            f'Batch 1, OpenVINO CPU plugin, `INFERENCE_NUM_THREADS={m0["threads"]}`, one '
            f'stream, latency hint; single inferences interleaved between the four compiled '
            f'models. "accurate" = `OPENVINO_CPU_CONFIG` {res["accurate_config"]} (f32 '
            f'wherever a layer is not INT8, no dynamic quantization: reproduces the torch '
            f'model); "defaults" = OpenVINO\'s defaults (bf16 on this CPU, dynamic '
            f'quantization). FP32 = the plain timm model converted by OpenVINO; W8A8 = '
            f'`export_openvino` of the NNCF student (FakeQuantize IR), calibrated on noise. '
            f'The models are randomly initialised: latency, sizes and layer precisions do '
            f'not depend on the weights; the errors (8 noise images) are indicative only. '
            f'In the "defaults" rows the FP32 IR runs in bf16 (table below), so that ratio '
            f'is INT8 vs bf16.\n\n{tab}\n\n'
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
