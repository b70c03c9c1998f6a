"""QAT cost: time and memory of one Stage 2 step, quantized student vs full precision.

One step is what ``quantize_data_free`` runs per batch: the teacher F forward (no grad,
attention recorded), the student forward with its attention recorded, ``T²·KL + λ·L_mssim``
(docs/method.md, Stage 2), backward and an SGD (Nesterov) step. The students compared:

* ``FP``: a trainable full-precision copy of F (the same step without fake quantizers);
* ``W8A8`` and ``W4A4``: :func:`maskaq_plugin.quant.quantize_model` (NNCF fake
  quantization, LSQ-like trainable activation scales).

The batch is fixed (pre-augmented noise, batch 16 as in the paper code), so the data
pipeline is not timed. Time: interleaved rounds, median. Memory: the peak of live CPU
tensor bytes during one step (torch.profiler with ``profile_memory=True``, its memory
timeline), i.e. activations, saved tensors and gradients on top of what existed before;
on CUDA the same quantity from ``torch.cuda.max_memory_allocated``.
"""
import copy
import statistics

import torch

from maskaq_plugin.quant import QuantScheme, quantize_model
from maskaq_plugin.qat import build_qat_optimizer, classification_qat_loss, qat_train_step

from .common import interleaved, paired_ratio, table, tiny_deit, tiny_swin

MODELS = {
    'tiny DeiT (112 px, patch 8: 196 patches, dim 96, depth 4, 3 heads)':
        lambda: tiny_deit(112),
    'tiny Swin (112 px, patch 4, window 7, dim 48, depths 2-2-2, heads 3-6-12)':
        lambda: tiny_swin(112, window_size=7),
}
STUDENTS = {'FP': None, 'W8A8': QuantScheme(8, 8), 'W4A4': QuantScheme(4, 4)}


def peak_step_memory(step, device='cpu') -> float:
    """Peak live tensor memory (MiB) during ``step()`` above what existed before it.

    CPU: torch.profiler's memory timeline; CUDA: the allocator's peak statistics.
    """
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(
        torch.device('cpu'))
    return max(sum(s) for s in sizes) / 2**20 if sizes else float('nan')


def _steps(build, batch: int, device='cpu') -> dict:
    teacher = build().to(device)
    size = (3, *teacher.patch_embed.img_size)
    x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(0)).to(device)
    students = {name: copy.deepcopy(teacher) if scheme is None else
                quantize_model(teacher, scheme, x[:1], calib_inputs=x)
                for name, scheme in STUDENTS.items()}
    teacher.requires_grad_(False)  # after copying: the students train every parameter
    steps = {}
    for name, student in students.items():
        student.train()
        params = [p for p in student.parameters() if p.requires_grad]
        opt, sched = build_qat_optimizer(params, total_steps=10**6)
        steps[name] = (lambda s=student, o=opt, sc=sched: qat_train_step(
            lambda: classification_qat_loss(teacher, s, x), o, sc))
    return steps


def run(*, batch: int = 16, repeats: int = 10, device: str = 'cpu',
        models: dict = None, memory: bool = True) -> dict:
    """Time and (``memory``) peak step memory of every model (``models``: label ->
    builder; default :data:`MODELS`) on ``device``."""
    results = []
    for label, build in (models or MODELS).items():
        steps = _steps(build, batch, device)
        times = interleaved(steps, repeats, warmup=2)
        peaks = {name: peak_step_memory(step, device) for name, step in steps.items()} \
            if memory else {}
        results.append(dict(
            model=label, batch=batch, repeats=repeats, times=times, device=str(device),
            median_s={k: statistics.median(v) for k, v in times.items()},
            ratio={k: paired_ratio(times, k, 'FP') for k in times if k != 'FP'},
            peak_mib=peaks))
    return dict(models=results)


def markdown(res: dict, command: str, machine: str) -> str:
    rows = []
    for m in res['models']:
        short = m['model'].split(' (')[0]
        for name, med in m['median_s'].items():
            ratio = '1 (reference)' if name == 'FP' else f'{m["ratio"][name]:.2f}'
            mem = m['peak_mib'][name]
            mem_ratio = '1' if name == 'FP' else f'{mem / m["peak_mib"]["FP"]:.2f}'
            rows.append([short, name, f'{med * 1e3:.0f}', ratio, f'{mem:.0f}', mem_ratio])
    m0 = res['models'][0]
    tab = table(['model', 'student', f'ms / step (median of {m0["repeats"]})',
                 'time ÷ FP (paired median)', 'peak step memory (MiB)', 'memory ÷ FP'], rows)
    models = '; '.join(m['model'] for m in res['models'])
    return (f'Command: `{command}`\n\nMachine: {machine}\n\n'
            f'One QAT step (teacher forward, student forward, KD + 10·L_mssim, backward, '
            f'SGD), batch {m0["batch"]}, on {models}. "FP" trains a full-precision copy '
            f'with the same loss. Peak step memory: the highest live CPU tensor memory '
            f'during one step, from torch.profiler\'s memory timeline '
            f'(`profile_memory=True`); parameters and optimizer state that exist before the '
            f'step are not in it.\n\n{tab}\n')


def plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    names = list(STUDENTS)
    for ax, key, label in ((axes[0], 'median_s', 'ms / QAT step'),
                           (axes[1], 'peak_mib', 'peak step memory (MiB)')):
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            xs = [j + i * width for j in range(len(res['models']))]
            ys = [m[key][name] * (1e3 if key == 'median_s' else 1) for m in res['models']]
            ax.bar_label(ax.bar(xs, ys, width, label=name), fmt='%.0f', fontsize=7)
        ax.set_xticks([j + width for j in range(len(res['models']))])
        ax.set_xticklabels([m['model'].split(' (')[0] for m in res['models']])
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f'QAT step cost, batch {res["models"][0]["batch"]}')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
