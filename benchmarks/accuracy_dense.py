"""Accuracy of each method, bit-width and seed on the digit-scene detector and segmentor.

Every run is a real ``tools/train.py`` run (subprocess) of the tiny MaskAQ config of the
task, rewritten for the variant (method, bits, seed, budget) and dumped next to its
results; the metrics are the ones the Runner's validation logs (COCO box / mask AP,
mIoU) on the 100 real validation scenes. Runs already finished (``result.json`` in their
work dir) are reused, so an interrupted benchmark continues where it stopped.

Variants (docs/method.md, "What is compared against"), same budget each (images per round,
synthesis iterations, QAT epochs and batch):

* ``noise``: calibration + QAT on Gaussian noise images; KD only (no ``L_mssim``);
* ``psaq``: synthesis with L_ent + L_sem + L_tv, no student, no refresh; KD only;
* ``mimiq``: synthesis with L_head + L_sem + L_tv; QAT with unmasked SSIM; no refresh;
* ``maskaq``: everything (L_mad with the student, masked L_mssim, refresh);
* ``real``: the MaskAQ QAT on as many real training scenes (calibrated on the first
  batch of them, ``DataCalibrationHook``), the upper bound that needs data;
* ablations of MaskAQ: ``maskaq-no-ent``, ``maskaq-no-mad``, ``maskaq-no-refresh``,
  ``maskaq-random-mask`` (a random mask of the same size in L_mad and L_mssim),
  ``maskaq-no-mssim`` (KD-only QAT: no ``L_mssim``), ``maskaq-no-qat`` (calibration on
  MaskAQ's first round only: the QAT epochs run with learning rate 0, no refresh; what
  Stage 2 adds).
"""
import json
import os
import os.path as osp
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from maskaq_plugin.utils import last_logged_metrics

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

TASKS = {
    'det': dict(config='configs/mmdet/maskaq_maskrcnn_swin-tiny_digits_w4a8.py',
                fp_config='configs/mmdet/maskrcnn_swin-tiny_fp_digits.py',
                fp_name='maskrcnn_swin-tiny_digits',
                keys=('coco/bbox_mAP', 'coco/segm_mAP'),
                labels=('box AP', 'mask AP')),
    'seg': dict(config='configs/mmseg/maskaq_upernet_swin-tiny_digits_w4a8.py',
                fp_config='configs/mmseg/upernet_swin-tiny_fp_digits.py',
                fp_name='upernet_swin-tiny_digits',
                keys=('mIoU',), labels=('mIoU',)),
}
BITS = {'w4a8': (4, 8), 'w4a4': (4, 4), 'w3a3': (3, 3)}
METHODS = ('noise', 'psaq', 'mimiq', 'maskaq', 'real')
ABLATIONS = ('maskaq-no-ent', 'maskaq-no-mad', 'maskaq-no-refresh', 'maskaq-random-mask',
             'maskaq-no-mssim', 'maskaq-no-qat')
# Options of the random-mask ablation: Synthesizer (L_mad) and kd (L_mssim weighting).
RANDOM_MASK = dict(synthesis=dict(mask_mode='random'), kd=dict(mask_mode='random'))


RECIPES = ('lsq', 'nncf')


def split_variant(name: str):
    """``'maskaq@nncf'`` -> ``('maskaq', 'nncf')``; no suffix: the default ``'lsq'``
    (the authors' quantizers; ``@nncf``: NNCF's, the project's first recipe)."""
    base, _, recipe = name.partition('@')
    recipe = recipe or 'lsq'
    if recipe not in RECIPES:
        raise ValueError(f'variant {name!r}: unknown recipe {recipe!r}; known: {RECIPES}')
    return base, recipe


def variant_changes(name: str) -> dict:
    """What a variant changes in the MaskAQ config: synthesis / loss-weight / kd
    overrides, whether the bank is refreshed, whether real data replaces it, and the
    quantizer recipe (a ``@nncf`` suffix)."""
    name, recipe = split_variant(name)
    v = dict(synthesis={}, loss_weights={}, kd={}, refresh=True, real=False, lr=None,
             recipe=recipe)
    if name == 'noise':
        v.update(synthesis=dict(method='noise'), kd=dict(mssim=0.0), refresh=False)
    elif name == 'psaq':
        v.update(synthesis=dict(method='psaq'), kd=dict(mssim=0.0), refresh=False)
    elif name == 'mimiq':
        v.update(synthesis=dict(method='mimiq'), kd=dict(w_high=1.0), refresh=False)
    elif name == 'real':
        v.update(real=True, refresh=False)
    elif name == 'maskaq-no-ent':
        v['loss_weights'] = dict(ent=0.0)
    elif name == 'maskaq-no-mad':
        v['loss_weights'] = dict(mad=0.0)
    elif name == 'maskaq-no-refresh':
        v['refresh'] = False
    elif name == 'maskaq-no-mssim':  # KD-only QAT (see the classification factorial)
        v['kd'] = dict(mssim=0.0)
    elif name == 'maskaq-no-qat':  # Stage 1 + calibration only
        v.update(refresh=False, lr=0.0)
    elif name == 'maskaq-random-mask':
        v.update(synthesis=dict(RANDOM_MASK['synthesis']), kd=dict(RANDOM_MASK['kd']))
    elif name != 'maskaq':
        raise ValueError(f'unknown variant {name!r}; known: {list(METHODS + ABLATIONS)}')
    return v


def build_config(task: str, variant: str, bits: str, seed: int, budget: dict,
                 data_root: str):
    """The MMEngine Config of one run."""
    from mmengine.config import Config
    spec = TASKS[task]
    cfg = Config.fromfile(osp.join(ROOT, spec['config']))
    v = variant_changes(variant)
    w, a = BITS[bits]
    epochs, batch, n = budget['epochs'], budget['batch_size'], budget['num_samples']
    root = osp.join(ROOT, data_root).rstrip('/') + '/'

    cfg.model.w_bits, cfg.model.a_bits = w, a
    cfg.model.kd = {**cfg.model.kd, **v['kd']}
    # explicit in the config text, so a stored run of another recipe is never reused
    cfg.model.quant = {**(cfg.model.get('quant') or {}), 'recipe': v['recipe']}
    cfg.randomness = dict(seed=seed)
    if v['lr'] is not None:
        cfg.optim_wrapper.optimizer.lr = v['lr']
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = epochs
    cfg.param_scheduler[0].update(T_max=epochs, end=epochs)
    cfg.default_hooks.checkpoint.update(interval=epochs, max_keep_ckpts=1)
    cfg.default_hooks.logger.interval = 2
    for split in ('val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = root
        if task == 'det':
            cfg[f'{split}_evaluator'].ann_file = root + 'coco/annotations/instances_val.json'
    refresh = [h for h in cfg.custom_hooks if h.type == 'SampleRefreshHook'][0]
    if v['real']:
        fp = Config.fromfile(osp.join(ROOT, spec['fp_config']))
        loader = fp.train_dataloader
        loader.batch_size, loader.num_workers = batch, 0
        loader.pop('persistent_workers', None)
        loader.pop('batch_sampler', None)  # mmdet's aspect-ratio sampler: plain batches
        loader.sampler = dict(type='DefaultSampler', shuffle=True)
        loader.dataset.data_root = root
        loader.dataset.indices = n  # the first n scenes: the budget of the others
        cfg.train_dataloader = loader
        cfg.custom_hooks = [dict(type='DataCalibrationHook', num_batches=1)]
    else:
        cfg.train_dataloader.batch_size = batch
        cfg.train_dataloader.dataset.num_samples = n
        synthesis = {**refresh.synthesis, **v['synthesis']}
        synthesis['iters'] = budget['synthesis_iters']
        synthesis['loss_weights'] = {**synthesis.get('loss_weights', {}),
                                     **v['loss_weights']}
        refresh.update(interval=budget['refresh_every'] if v['refresh'] else 0,
                       batch_size=batch, synthesis=synthesis,
                       bootstrap_iters=budget['synthesis_iters'])
        cfg.custom_hooks = [refresh]  # no export: accuracy only
    return cfg


def config_text(cfg_or_path) -> str:
    """The text of a dumped config without the lines the Runner adds (launcher, work_dir)."""
    if isinstance(cfg_or_path, str):
        with open(cfg_or_path) as f:
            text = f.read()
    else:
        text = cfg_or_path.pretty_text
    return '\n'.join(line for line in text.splitlines()
                     if not line.startswith(('launcher = ', 'work_dir = '))).strip()


def run_one(task: str, variant: str, bits: str, seed: int, budget: dict, work_root: str,
            data_root: str, threads: int, device: str = 'cpu') -> dict:
    """One training run, or its stored result when that was made with the same budget,
    on the same device and with the same config (a changed config, e.g. a new
    default, runs again; a result without a device was made on the CPU)."""
    work_dir = osp.join(work_root, task, variant, bits, f'seed{seed}')
    result_path = osp.join(work_dir, 'result.json')
    cfg_path = osp.join(work_dir, 'config.py')
    cfg = build_config(task, variant, bits, seed, budget, data_root)
    if osp.isfile(result_path) and osp.isfile(cfg_path):
        with open(result_path) as f:
            res = json.load(f)
        if (res.get('budget') == budget and res.get('device', 'cpu') == device
                and config_text(cfg_path) == config_text(cfg)):
            return res
    os.makedirs(work_dir, exist_ok=True)
    for name in os.listdir(work_dir):  # a stale or unfinished run: start over
        path = osp.join(work_dir, name)
        if osp.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    cfg.dump(cfg_path)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONHASHSEED='0')
    log_path = osp.join(work_dir, 'train.log')
    t0 = time.time()
    with open(log_path, 'w') as log:
        proc = subprocess.run([sys.executable, 'tools/train.py', cfg_path, '--work-dir',
                               work_dir, '--device', device], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    wall = time.time() - t0
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f'{task}/{variant}/{bits}/seed{seed} failed (rc '
                           f'{proc.returncode}); log {log_path}:\n{tail}')
    metrics = last_logged_metrics(work_dir, TASKS[task]['keys'])
    missing = set(TASKS[task]['keys']) - set(metrics)
    if missing:
        raise RuntimeError(f'{task}/{variant}/{bits}/seed{seed}: no {sorted(missing)} in '
                           f'the logs of {work_dir}')
    res = dict(task=task, variant=variant, bits=bits, seed=seed, budget=budget,
               metrics=metrics, wall_s=round(wall, 1), device=device)
    with open(result_path + '.tmp', 'w') as f:
        json.dump(res, f, indent=1)
    os.replace(result_path + '.tmp', result_path)
    return res


def run(*, tasks: Sequence[str] = ('det', 'seg'), variants: Sequence[str] = METHODS,
        bits: Sequence[str] = tuple(BITS), seeds: Sequence[int] = (0, 1, 2),
        num_samples: int = 16, synthesis_iters: int = 25, epochs: int = 8,
        batch_size: int = 8, refresh_every: int = 4, threads: int = 1,
        work_root: str = 'work_dirs/benchmark_accuracy',
        data_root: str = 'data/digit_scenes', log=print, device: str = 'cpu') -> dict:
    """Run (or reuse) every task x variant x bits x seed; return every finished run of
    this budget under ``work_root`` (these and earlier calls')."""
    budget = dict(num_samples=num_samples, synthesis_iters=synthesis_iters, epochs=epochs,
                  batch_size=batch_size, refresh_every=refresh_every)
    work_root = osp.join(ROOT, work_root)
    subprocess.run([sys.executable, 'tools/make_digit_scenes.py', '--out', data_root],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(osp.join(ROOT, 'checkpoints', 'fp_metrics.json')) as f:
        fp = json.load(f)['models']
    # Bit-width outermost, then seed: an interrupted benchmark leaves whole columns.
    runs = [(t, v, b, s) for b in bits for s in seeds for t in tasks for v in variants]
    results = []
    for i, (t, v, b, s) in enumerate(runs, 1):
        t0 = time.time()
        res = run_one(t, v, b, s, budget, work_root, data_root, threads, device)
        results.append(res)
        shown = ', '.join(f'{k}={val:.4g}' for k, val in res['metrics'].items())
        log(f'[{i}/{len(runs)}] {t} {v} {b} seed {s}: {shown} ({res["wall_s"]:.0f} s run, '
            f'{time.time() - t0:.0f} s now)')
    # The tables show every finished run of this budget, not only this call's: separate
    # calls (the main matrix, then the ablations) add up to one section.
    results = finished_runs(work_root, budget)
    tasks = sorted({r['task'] for r in results}, key=list(TASKS).index)
    fp_metrics = {t: {k: fp[TASKS[t]['fp_name']]['metrics'].get(k) for k in TASKS[t]['keys']}
                  for t in tasks}
    return dict(budget=budget, results=results, fp=fp_metrics, threads=threads)


def finished_runs(work_root: str, budget: dict) -> List[dict]:
    """Every ``result.json`` under ``work_root`` made with ``budget``, in a stable order."""
    found = []
    for root, _, files in os.walk(work_root):
        if 'result.json' in files:
            with open(osp.join(root, 'result.json')) as f:
                res = json.load(f)
            if res.get('budget') == budget and res.get('task') in TASKS:
                found.append(res)
    return sorted(found, key=lambda r: (list(TASKS).index(r['task']),
                                        _variant_order(r['variant']),
                                        list(BITS).index(r['bits']), r['seed']))


def summarise(res: dict) -> Dict[tuple, dict]:
    """(task, variant, bits) -> {key: (mean, std, n)} and the mean wall time."""
    groups: Dict[tuple, List[dict]] = {}
    for r in res['results']:
        groups.setdefault((r['task'], r['variant'], r['bits']), []).append(r)
    out = {}
    for key, rows in groups.items():
        stats = {}
        for k in TASKS[key[0]]['keys']:
            vals = [100 * r['metrics'][k] if k.startswith('coco/') else r['metrics'][k]
                    for r in rows]
            stats[k] = (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1
                        else 0.0, len(vals))
        stats['wall_s'] = statistics.mean(r['wall_s'] for r in rows)
        out[key] = stats
    return out


def _cell(stat) -> str:
    mean, std, n = stat
    return f'{mean:.1f} ± {std:.1f}' if n > 1 else f'{mean:.1f}'


def markdown(res: dict, command: str, machine: str) -> str:
    """Tables per task: variants x bit-widths (mean ± std over seeds) and wall time."""
    summary = summarise(res)
    b = res['budget']
    lines = [
        'Tiny Swin Mask R-CNN and UperNet trained on the digit scenes (checkpoints/, '
        'tools/train_fp_models.py); only the backbone is quantized. Each cell: mean ± std '
        'over the seeds of one `tools/train.py` run of the tiny MaskAQ config rewritten '
        'for the variant (the exact config is kept as `config.py` in each run\'s work dir), '
        'evaluated on the 100 real validation scenes. Same budget for every variant: '
        f'{b["num_samples"]} images per round, {b["synthesis_iters"]} synthesis iterations '
        f'(bootstrap as many), {b["epochs"]} QAT epochs, batch {b["batch_size"]}; MaskAQ '
        f'refreshes every {b["refresh_every"]} epochs. Box / mask AP in %, COCO style.',
        'The tables hold every finished run of this budget under '
        '`work_dirs/benchmark_accuracy/` (finished runs are reused, so separate calls add up); '
        f'the last call ({machine}):', '', '```bash', command, '```', '']
    for task in TASKS:
        keys = TASKS[task]['keys']
        if not any(k[0] == task for k in summary):
            continue
        bits = [bb for bb in BITS if any(k[0] == task and k[2] == bb for k in summary)]
        header = ['variant'] + [f'{bb.upper()} {label}' for bb in bits
                                for label in TASKS[task]['labels']] + ['mean run time (s)']
        fp = res['fp'][task]
        rows = [['FP (32-bit)'] + [
            (f'{100 * fp[k]:.1f}' if k.startswith('coco/') else f'{fp[k]:.1f}')
            if fp.get(k) is not None else '' for _ in bits for k in keys] + ['–']]
        for v in _variants(summary, task):
            cells, walls = [], []
            for bb in bits:
                s = summary.get((task, v, bb))
                cells += [_cell(s[k]) if s else '' for k in keys]
                if s:
                    walls.append(s['wall_s'])
            label = f'*{v}* (upper bound, needs data)' if split_variant(v)[0] == 'real' else v
            rows.append([label] + cells + [f'{statistics.mean(walls):.0f}' if walls else ''])
        lines += [f'**{task}** ({", ".join(TASKS[task]["labels"])})', '',
                  _table(header, rows), '']
    return '\n'.join(lines)


def _variant_order(v: str):
    base, recipe = split_variant(v)
    order = METHODS + ABLATIONS
    return (recipe != 'lsq', order.index(base) if base in order else len(order), v)


def _variants(summary, task: str) -> List[str]:
    """The variants with runs for ``task``: the default recipe's first, then ``@nncf``."""
    return sorted({k[1] for k in summary if k[0] == task}, key=_variant_order)


def _table(header, rows) -> str:
    out = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    out += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(out)


def plot(res: dict, path: str) -> Optional[str]:
    """Bar chart: first metric of each task per variant and bit-width (mean ± std)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    summary = summarise(res)
    tasks = [t for t in TASKS if any(k[0] == t for k in summary)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 4.6), squeeze=False)
    every = sorted({k[1] for k in summary}, key=_variant_order)
    colours = dict(zip(every, plt.get_cmap('tab20').colors * 2))  # one per variant
    for ax, task in zip(axes[0], tasks):
        key = TASKS[task]['keys'][0]
        variants = _variants(summary, task)
        bits = [bb for bb in BITS if any(k[0] == task and k[2] == bb for k in summary)]
        width = 0.8 / max(1, len(variants))
        for i, v in enumerate(variants):
            stats = [summary.get((task, v, bb), {}).get(key, (float('nan'), 0, 0))
                     for bb in bits]
            ax.bar([j + i * width for j in range(len(bits))], [s[0] for s in stats], width,
                   yerr=[s[1] for s in stats], label=v, capsize=2, color=colours[v])
        means = [s[key][0] for k, s in summary.items() if k[0] == task]
        fp = res['fp'].get(task, {}).get(key)
        if fp is not None:
            fp = 100 * fp if key.startswith('coco/') else fp
            ax.axhline(fp, color='k', linestyle='--', linewidth=1, label='FP')
            means.append(fp)
        ax.set_ylim(min(means) - 3, max(means) + 2)  # zoomed: the differences are small
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(bits))])
        ax.set_xticklabels([bb.upper() for bb in bits])
        ax.set_title(f'{task}: {TASKS[task]["labels"][0]}')
    legend = {}  # every variant of every panel, once
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc='lower center', ncol=7, fontsize=7,
               frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))  # room for the legend below the panels
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
