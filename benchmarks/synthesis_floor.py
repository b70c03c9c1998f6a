"""Synthesis floor ratio (issue #12 item 4): one iteration of ours ÷ the models' own cost.

The *floor* of a Stage 1 iteration is what no synthesizer can skip: the teacher F and
the quantized student Q run forward on the batch and the gradient flows back to the
images alone (every parameter frozen, only the images require grad). Variants, timed in
one process in interleaved rounds (:func:`benchmarks.common.interleaved`):

* ``ours``: :class:`maskaq_plugin.synthesis.Synthesizer`, ``iters`` iterations of one
  batch (augmentation, attention recording, L_head / L_sem / L_tv / L_ent / L_mad, the
  AdamW step and the clamp);
* ``floor``: :func:`floor_step` ``iters`` times on a batch of the same shape, with the
  **same module objects** F and Q (explicit attention, the W4A4 student of the default
  recipe) and the same input-only quantizer backward as the synthesizer.

The paired ratio ``ours ÷ floor`` is therefore our overhead over the model cost, not the
model cost itself.
"""
import statistics

import torch

from maskaq_plugin.quant import QuantScheme, frozen_quantizer_backward
from maskaq_plugin.synthesis import ClassificationPrior, Synthesizer

from .common import MEAN, STD, interleaved, paired_ratio, swin_t_224, table, vit_224
from .synthesis_speed import MODELS as TINY_MODELS
from .synthesis_speed import _setup

MODELS_224 = {
    'DeiT-T (deit_tiny_patch16_224: 224 px, patch 16, dim 192, depth 12, 3 heads)': vit_224,
    'Swin-T (224 px, patch 4, window 7, dim 96, depths 2-2-6-2, heads 3-6-12-24)':
        swin_t_224,
}
MODEL_SETS = {'224': MODELS_224, 'tiny': TINY_MODELS,
              **{label.split('-')[0].lower(): {label: build}  # 'deit', 'swin'
                 for label, build in MODELS_224.items()}}


def floor_step(teacher, student, x: torch.Tensor) -> torch.Tensor:
    """F and Q forward on ``x`` and the backward of the sum of their outputs to ``x``.

    Returns the image gradient ``∂(ΣF(x) + ΣQ(x))/∂x``; no parameter gradient is formed
    when the models are frozen.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = teacher(x).sum() + student(x).sum()
        grad, = torch.autograd.grad(out, x)
    return grad


def run(*, batch: int = 16, iters: int = 2, repeats: int = 3, seed: int = 0,
        scheme: QuantScheme = QuantScheme(4, 4), device: str = 'cpu',
        models='224') -> dict:
    """Time ``ours`` and ``floor`` on every model of ``models`` (``'224'``, ``'tiny'`` or
    label -> builder); returns a JSON-able dict of times and paired ratios."""
    results = []
    for label, build in (MODEL_SETS[models] if isinstance(models, str) else models).items():
        teacher, student, size = _setup(build, batch, scheme, device)
        for model in (teacher, student):  # frozen, as the synthesizer leaves them
            model.eval().requires_grad_(False)
        syn = Synthesizer(teacher, prior=ClassificationPrior(teacher.num_classes),
                          input_size=size, mean=MEAN, std=STD, student=student,
                          iters=iters, progress=False)
        x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(seed)).to(device)

        def ours():
            syn.synthesize(batch, batch, seed=seed)

        def floor():
            with frozen_quantizer_backward():
                for _ in range(iters):
                    floor_step(teacher, student, x)

        times = interleaved(dict(ours=ours, floor=floor), repeats)
        ratios = [a / b for a, b in zip(times['ours'], times['floor'])]
        results.append(dict(
            model=label, student=f'{scheme.name} ({scheme.recipe})', batch=batch,
            iters=iters, repeats=repeats, device=str(device), times=times,
            s_per_iter={k: statistics.median(v) / iters for k, v in times.items()},
            ratio=paired_ratio(times, 'ours', 'floor'), ratios=ratios))
    return dict(models=results)


def markdown(res: dict, command: str, machine: str) -> str:
    """The table of the section "Synthesis floor ratio (issue #12 item 4)"."""
    m0 = res['models'][0]
    rows = [[m['model'].split(' (')[0], f'{m["s_per_iter"]["ours"]:.2f}',
             f'{m["s_per_iter"]["floor"]:.2f}', f'**{m["ratio"]:.2f}**',
             ', '.join(f'{r:.2f}' for r in m['ratios'])] for m in res['models']]
    return (f'Command: `{command}`\n\nMachine: {machine}\n\n'
            f'Batch {m0["batch"]}, {m0["iters"]} iterations per call, student '
            f'{m0["student"]}, {m0["repeats"]} interleaved rounds (after one warm-up call '
            'each). `floor` = F and Q forward + backward to the images alone (parameters '
            'frozen), same module objects and batch as `ours`.\n\n' +
            table(['model', 'ours s/iter (median)', 'floor s/iter (median)',
                   'ours ÷ floor (paired median)', 'per-round ratios'], rows) + '\n')
