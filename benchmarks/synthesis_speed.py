"""Synthesis speed: our ``Synthesizer`` against the plain paper loop, at equal work.

Both optimise the same batch (same seed, so the same initial noise, labels and random
draws) for the same number of iterations with the same objective; the loss terms of the
first and last iterations are compared to show it. Variants, timed in one process with
interleaved rounds (:func:`benchmarks.common.interleaved`):

* ``ours``: :class:`maskaq_plugin.synthesis.Synthesizer` (working tree);
* ``before`` (optional): another version of ``synthesizer.py`` (a file or ``REV:path``;
  the CLI's default is our first version, ``benchmarks/synthesizer_first.py``);
* ``paper``: :mod:`benchmarks.paper_loop`, parameters of F and Q left trainable as in the
  authors' code (the backward also fills their gradients);
* ``paper_frozen``: the same loop with F and Q frozen, to separate loops from freezing.

On CUDA (``device``) the models and images live on the GPU; ``ours`` then draws its
augmentation on a CUDA generator and the paper loop on the CPU one, so the terms agree
at iteration 1 only on the CPU (the timing compares the same work either way).
"""
import hashlib
import importlib.util
import os.path as osp
import statistics
import subprocess
import sys
import tempfile

import torch

from maskaq_plugin.quant import QuantScheme, quantize_model
from maskaq_plugin.synthesis import ClassificationPrior, Synthesizer
from maskaq_plugin.synthesis.synthesizer import batch_seed

from . import paper_loop
from .common import MEAN, ROOT, STD, interleaved, paired_ratio, tiny_deit, tiny_swin

MODELS = {
    'tiny DeiT (64 px, patch 8, dim 96, depth 4, 3 heads)': lambda: tiny_deit(64),
    'tiny Swin (64 px, patch 4, window 4, dim 48, depths 2-2-2, heads 3-6-12)':
        lambda: tiny_swin(64),
}
TERMS = ('head', 'sem', 'tv', 'ent', 'mad', 'loss')


def load_synthesizer(source: str):
    """``Synthesizer`` class of another version of synthesizer.py (path or ``REV:path``)."""
    path = source if osp.isfile(source) else osp.join(ROOT, source)
    if not osp.isfile(path):
        code = subprocess.run(['git', 'show', source], cwd=ROOT, check=True,
                              capture_output=True).stdout
        handle = tempfile.NamedTemporaryFile('wb', suffix='.py', delete=False)
        handle.write(code)
        handle.close()
        path = handle.name
    name = 'maskaq_plugin.synthesis._benchmark_baseline'  # relative imports resolve
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.Synthesizer


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def _setup(build, batch: int, scheme: QuantScheme, device='cpu'):
    teacher = build().to(device)
    c, h, w = 3, teacher.patch_embed.img_size[0], teacher.patch_embed.img_size[1]
    calib = torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(123)).to(device)
    student = quantize_model(teacher, scheme, calib[:1], calib_inputs=calib)
    return teacher, student, (c, h, w)


def run(*, batch: int = 8, iters: int = 20, repeats: int = 5, seed: int = 0,
        scheme: QuantScheme = QuantScheme(4, 4), before: str = None, device: str = 'cpu',
        models: dict = None) -> dict:
    """Measure every model (``models``: label -> builder; default :data:`MODELS`) on
    ``device``; returns a JSON-able dict of times, ratios and loss terms."""
    results = []
    classes = {'ours': Synthesizer}
    if before:
        classes['before'] = load_synthesizer(before)
    for label, build in (models or MODELS).items():
        teacher, student, size = _setup(build, batch, scheme, device)
        num_classes = teacher.num_classes

        def ours(cls, n_iters):
            syn = cls(teacher, prior=ClassificationPrior(num_classes), input_size=size,
                      mean=MEAN, std=STD, student=student, iters=n_iters, progress=False)
            res = syn.synthesize(batch, batch, seed=seed)
            return dict(images=res.images, losses=res.losses)

        def paper(n_iters, freeze):
            gen = torch.Generator().manual_seed(batch_seed(seed, 0))
            out = paper_loop.generate(teacher, student, batch_size=batch, iters=n_iters,
                                      num_classes=num_classes, input_size=size, mean=MEAN,
                                      std=STD, gen=gen, freeze=freeze)
            return dict(images=out['images'], losses=out['last'])

        # equal work: the first iteration and the full run give the same terms
        check = {name: ours(cls, 1) for name, cls in classes.items()}
        check['paper'] = paper(1, False)
        first = _compare(check)
        last_out = {}

        def timed(name, fn):
            def call():
                last_out[name] = fn()
            return call

        variants = {name: timed(name, lambda cls=cls: ours(cls, iters))
                    for name, cls in classes.items()}
        variants['paper'] = timed('paper', lambda: paper(iters, False))
        variants['paper_frozen'] = timed('paper_frozen', lambda: paper(iters, True))
        times = interleaved(variants, repeats)
        last = _compare(last_out)
        results.append(dict(
            model=label, student=scheme.name, batch=batch, iters=iters, repeats=repeats,
            device=str(device),
            times=times, median_s={k: statistics.median(v) for k, v in times.items()},
            images_per_s={k: batch / statistics.median(v) for k, v in times.items()},
            ratio={k: paired_ratio(times, k, 'ours') for k in times if k != 'ours'},
            first=first, last=last))
    digest = None
    if before:
        digest = hashlib.md5(open(sys.modules[classes['before'].__module__].__file__,
                                  'rb').read()).hexdigest()
    return dict(models=results, before=before, before_md5=digest)


def _compare(outs: dict) -> dict:
    """Loss terms of every variant and their largest relative difference to ``ours``."""
    ref = outs['ours']
    terms = {name: {k: out['losses'][k] for k in TERMS if k in out['losses']}
             for name, out in outs.items()}
    diff = {name: max(rel_diff(terms[name][k], terms['ours'][k]) for k in terms['ours'])
            for name in outs if name != 'ours'}
    img = {name: float((out['images'] - ref['images']).abs().max().cpu())
           for name, out in outs.items() if name != 'ours'}
    return dict(terms=terms, max_rel_diff=diff, image_max_abs_diff=img)


def markdown(res: dict, command: str, machine: str) -> str:
    """Tables of the section "Synthesis speed"."""
    from .common import table
    m0 = res['models'][0]
    rows, eq_rows = [], []
    for m in res['models']:
        short = m['model'].split(' (')[0]
        for name, med in m['median_s'].items():
            ratio = '1 (reference)' if name == 'ours' else f'{m["ratio"][name]:.2f}'
            rows.append([short, name, f'{med:.2f}', f'{m["images_per_s"][name]:.2f}', ratio])
        for when in ('first', 'last'):
            t = m[when]['terms']
            for name in t:
                eq_rows.append([short, f'{"1" if when == "first" else m["iters"]}', name] +
                               [f'{t[name][k]:.6g}' if k in t[name] else '' for k in TERMS] +
                               ['' if name == 'ours' else
                                f'{m[when]["max_rel_diff"][name]:.1e}',
                                '' if name == 'ours' else
                                f'{m[when]["image_max_abs_diff"][name]:.1e}'])
    speed = table(['model', 'variant', f'median s / batch ({m0["repeats"]} rounds)',
                   'images/s', 'time ÷ ours (paired median)'], rows)
    if 'before' in m0['times']:
        speed += '\n\nBefore → after (paired medians): ' + '; '.join(
            f'{m["model"].split(" (")[0]}: paper ÷ before '
            f'{paired_ratio(m["times"], "paper", "before"):.2f} → paper ÷ ours '
            f'{m["ratio"]["paper"]:.2f} (before ÷ ours {m["ratio"]["before"]:.2f})'
            for m in res['models']) + '.'
    equal = table(['model', 'iteration', 'variant', *TERMS, 'max rel. diff of terms',
                   'max abs diff of images'], eq_rows)
    variants = ('`ours`: `Synthesizer` (working tree); '
                + (f'`before`: `{res["before"]}` (md5 {res["before_md5"][:8]}), the '
                   'synthesizer without the input-only '
                   'backward of frozen quantizers; ' if res.get('before') else '')
                + '`paper`: `benchmarks/paper_loop.py`, the authors\' loop structure '
                '(per-image and per-layer loops, F and Q parameters left trainable, so the '
                'backward also computes their gradients, as in their code); '
                '`paper_frozen`: the same loop with F and Q frozen (loops only).')
    return (f'Command: `{command}`\n\nMachine: {machine}\n\n'
            f'Batch {m0["batch"]}, {m0["iters"]} iterations, student {m0["student"]} '
            f'(NNCF fake quantization), every term of docs/method.md on (L_head, L_sem, L_tv, '
            f'L_ent, L_mad). Variants, timed in one process in interleaved rounds (the '
            f'order rotates each round), median per variant and median of the per-round '
            f'ratios: {variants} The load moves between rounds, so compare the paired '
            f'ratios (same round), not medians of different variants.\n\n{speed}\n\n'
            f'Equal work: the same seed gives the same noise, labels and random draws '
            f'(augmentation, L_ent rows, mask drop), and the terms agree:\n\n{equal}\n\n'
            f'At iteration 1 every term agrees to float rounding (the paper loop computes '
            f'variances as E[x²] − μ², ours centred) and the images after one AdamW step '
            f'agree to < 1e-3 (lr 0.1). Over {m0["iters"]} iterations the trajectories '
            f'drift apart slightly: AdamW normalises tiny gradient differences, and a '
            f'{m0["student"]} fake quantizer turns an input difference of 1e-4 at a rounding '
            f'boundary into a full step, so L_mad of Q moves first; the drift is not '
            f'systematic. `before` and `ours` give bit-identical terms and images '
            f'(iterations 1 and {m0["iters"]}).\n')


def plot(res: dict, path: str) -> None:
    """Bar chart of images/s per variant and model."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    models = res['models']
    names = list(models[0]['images_per_s'])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(models))]
        ys = [m['images_per_s'][name] for m in models]
        bars = ax.bar(xs, ys, width, label=name)
        ax.bar_label(bars, fmt='%.2f', fontsize=7)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(models))])
    ax.set_xticklabels([m['model'].split(' (')[0] for m in models])
    ax.set_ylabel('synthetic images / s (higher is better)')
    ax.set_title(f'Stage 1 synthesis, batch {models[0]["batch"]}, {models[0]["iters"]} iters, '
                 f'{models[0]["student"]} student')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
