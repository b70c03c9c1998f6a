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
import time

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
    """Time ``ours`` and ``floor`` on every model of ``models`` (a key of
    :data:`MODEL_SETS`: ``'224'``, ``'deit'``, ``'swin'``, ``'tiny'``; or label -> builder);
    returns a JSON-able dict of times and paired ratios.

    On the CPU the calls are timed in process CPU time (other jobs on shared cores do
    not count in it; meant for 1 thread), on CUDA in wall time.
    """
    cpu = torch.device(device).type == 'cpu'
    clock = time.process_time if cpu else time.perf_counter
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

        times = interleaved(dict(ours=ours, floor=floor), repeats, clock=clock)
        ratios = [a / b for a, b in zip(times['ours'], times['floor'])]
        results.append(dict(
            model=label, student=f'{scheme.name} ({scheme.recipe})', batch=batch,
            iters=iters, repeats=repeats, device=str(device), times=times,
            clock='process CPU time' if cpu else 'wall time',
            s_per_iter={k: statistics.median(v) / iters for k, v in times.items()},
            ratio=paired_ratio(times, 'ours', 'floor'), ratios=ratios))
    return dict(models=results)


def markdown(res: dict, command: str, machine: str) -> str:
    """The section "Synthesis floor ratio (issue #12 item 4)".

    A model entry may carry ``code`` (which version of the synthesizer ran, e.g. a
    commit before the cuts), ``command`` and ``machine`` when entries of several runs
    were merged into one result; the run's ``command`` and ``machine`` apply otherwise.
    ``res['note']``, when present, is printed under the table.
    """
    rows = [[m['model'].split(' (')[0], m.get('code', 'working tree'), m['batch'],
             f'{m["repeats"]} × {m["iters"]}', f'{m["s_per_iter"]["ours"]:.2f}',
             f'{m["s_per_iter"]["floor"]:.2f}', f'**{m["ratio"]:.2f}**',
             ', '.join(f'{r:.2f}' for r in m['ratios']),
             _load(m.get('machine', machine))] for m in res['models']]
    runs = sorted({(m.get('command', command), m.get('machine', machine))
                   for m in res['models']})
    return ('Command' + ('s' if len(runs) > 1 else '') + ': ' + '; '.join(
                f'`{c}`' for c in dict.fromkeys(c for c, _ in runs)) +
            f'\n\nMachine: {runs[0][1]}' + (' (load of each run in the table)'
                                            if len(runs) > 1 else '') + '\n\n'
            f'Student {res["models"][0]["student"]}. `ours`: one `Synthesizer` iteration '
            '(augmentation, attention recording, L_head, L_sem, L_tv, L_ent, L_mad, AdamW '
            'step, clamp). `floor`: F and Q forward + backward to the images alone '
            '(parameters frozen), the same module objects (explicit attention) and batch. '
            'Interleaved rounds after one warm-up call each, timed in '
            f'{res["models"][0].get("clock", "wall time")} (on the CPU the process time, '
            'with 1 thread, leaves out what the other jobs on the shared cores take); the '
            'ratio is the median of the per-round ratios.\n\n' +
            table(['model', 'synthesizer', 'batch', 'rounds × iters', 'ours s/iter (median)',
                   'floor s/iter (median)', 'ours ÷ floor (paired median)',
                   'per-round ratios', 'load'], rows) + '\n\n' +
            (res['note'].strip() + '\n\n' if res.get('note') else '') + CUTS)


CUTS = '''What the overhead was (torch.profiler and per-term wall times of one DeiT-T iteration at
batch 16 before the cuts, 1 thread, load about 2; per term forward + backward on recorded
scores):
`L_head` 0.6 + 2.7 s, `L_ent` 0.15 + 0.21 s, mask + `L_mad` 0.36 + 0.26 s, `L_tv`
0.02 + 0.12 s, augmentation 0.03 s, against 6.6 s for the floor. `L_head` min-max normalised
every `(B, H, N, N)` score map, transposed it for the head×head products and let autograd
run back through all of it: the backward of `amin` / `amax` alone (equality masks, float
conversions and divisions over the full maps) took about 1 s, the copies of the transposed
maps and the `(L, B, H, N, N)` stacks of every layer (built again for `L_ent`, the mask and
`L_mad`) most of the rest.

What was cut (the terms are unchanged):

* `L_head` (`maskaq_plugin/losses/_functional/_head_stats.py`): the mean, variances and
  covariances of the normalised maps follow from each raw row's min, max, mean and the
  head×head covariance of the centred raw rows, so the normalised maps are never built;
  the backward of those statistics is written out (one batched matmul, a scatter at each
  row's min and max, ties sharing the gradient as with `amin` / `amax`). Same values to
  float rounding; its gradient equals autograd through the naive loop in float64, ties
  included (tests/test_losses/test_inter_head_ssim_loss.py); the images after an AdamW
  step are therefore equal to rounding, not bit for bit.
* `L_ent` draws its 64 query rows before averaging over heads, the mask and `L_mad` read
  only the class-token row (with a class token), each layer on its own: no `(L, B, H, N,
  N)` stack is built. Bit-identical values and gradients.
* Left as they were: `L_tv` (about 2 % of the floor), the augmentation, the AdamW step
  and the clamp (each under 1 %).

The equal-work check of the synthesis-speed benchmark (ours against the authors' loop at
iteration 1, tests/test_benchmarks/test_paper_loop.py) still holds. The floor does the
model work of ours and nothing else (tests/test_benchmarks/test_synthesis_floor.py counts
the operations): the same forwards, and a backward that is a little longer than ours,
since ours needs no gradient from Q's logits (only its attention scores enter `L_mad`).
'''


def _load(machine: str) -> str:
    """``load average a before, b after`` of a machine line, or '' when absent."""
    start = machine.find('load average')
    return machine[start + len('load average '):machine.find(')', start)] if start >= 0 else ''
