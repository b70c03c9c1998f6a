"""The paper's Table 1 on the user's ImageNet: FP and data-free quantized top-1 beside the
paper's figures (tools/table1.py is the command line).

Steps, per model: 1. load the FP model from local weights (:mod:`.table1_data`) and
evaluate it; 2. for each bit-width, method and seed (a *cell*), quantize it with
:func:`maskaq_plugin.quantize_data_free` at the budget below and evaluate the student;
3. write the table (markdown and JSON) with the paper's figures (:mod:`.table1_paper`).
Every finished cell (and FP evaluation) is stored as JSON under ``<work_dir>/cells``
(:class:`~benchmarks.common.RunCache`: keyed by its arguments, the weights and validation
files and the code) and reused, so an interrupted run loses only the cell in progress.
"""
import json
import os
import os.path as osp
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.logging import print_log

from .common import RunCache, table
from .table1_data import fingerprint, load_fp_model, parse_bits, top1, val_dataset
from .table1_paper import LABELS, paper_top1

# The paper's budget (docs/method.md; configs/_base_/maskaq_runtime.py): T = 2000
# synthesis iterations, 100 QAT epochs with the set refreshed every 30 (MaskAQ only),
# batch 16 for synthesis and QAT; 10 000 synthetic images per round, the default of the
# authors' released main.py (``--num_samples 10000``: the QAT set it draws from the
# generated images).
PAPER_BUDGET = dict(num_samples=10000, synthesis_iters=2000, epochs=100, batch_size=16,
                    refresh_every=30)
METHODS = ('maskaq', 'mimiq', 'psaq', 'noise')


def log(msg: str) -> None:
    print_log(f'[table1] {msg}', logger='current')


def _fmt(values: List[float]) -> str:
    if len(values) == 1:
        return f'{values[0]:.2f}'
    return f'{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)} seeds)'


def rows_of(results: Dict[str, dict]) -> List[dict]:
    """One row per (model, setting, method): our top-1 per seed, mean, paper, Δ."""
    rows = []
    for model, res in results.items():
        cells = [('FP', 'fp', [res['fp']])]
        cells += [(bits, method, [c['top1'] for c in seeds])
                  for bits, by_method in res['quant'].items()
                  for method, seeds in by_method.items()]
        for setting, method, ours in cells:
            paper = paper_top1(model, setting, method)
            mean = statistics.mean(ours)
            rows.append(dict(model=model, label=LABELS[model.split('.')[0]], setting=setting,
                             method=method, ours=ours, ours_mean=round(mean, 4),
                             paper=paper, delta=None if paper is None else round(mean - paper, 4)))
    return rows


def markdown(rows: List[dict], header: str) -> str:
    body = [[f"{r['label']} (`{r['model']}`)", r['setting'],
             '—' if r['method'] == 'fp' else r['method'], _fmt(r['ours']),
             '—' if r['paper'] is None else f"{r['paper']:.2f}",
             '—' if r['delta'] is None else f"{r['delta']:+.2f}"] for r in rows]
    return header + '\n\n' + table(['Model', 'Setting', 'Method', 'Ours top-1 (%)',
                                    'Paper top-1 (%)', 'Δ (ours − paper)'], body) + '\n'


def run_table1(models: Sequence[str], weights: Dict[str, str], val_dir: str, *,
               bits: Sequence[str] = ('W4A4', 'W4A8'), methods: Sequence[str] = ('maskaq', ),
               seeds: Sequence[int] = (0, ), device: str = 'cpu',
               budget: Optional[dict] = None, work_dir: str = 'work_dirs/table1',
               val_labels: Optional[str] = None, max_val_images: Optional[int] = None,
               eval_batch_size: int = 64, workers: int = 4, recipe: str = 'lsq',
               save: bool = False, cache: bool = True) -> dict:
    """Run Table 1's cells; return ``{'rows', 'markdown', 'results'}`` and write
    ``<work_dir>/table1.md`` and ``table1.json``.

    Args:
        models (Sequence[str]): timm names of Table 1's models (``.tag`` allowed).
        weights (dict): model name -> local weights file (timm or mmpretrain).
        val_dir (str): ImageNet validation folder (``<wnid>/*.JPEG``).
        budget (dict, optional): Overrides of :data:`PAPER_BUDGET`. Defaults to None.
        Other arguments: as ``tools/table1.py --help``.
    """
    from timm.data import create_transform
    budget = dict(PAPER_BUDGET, **(budget or {}))
    for m in models:
        if m not in weights:
            raise ValueError(f'no weights for {m}: pass --weights {m}=PATH')
    for setting in bits:
        parse_bits(setting)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f'unknown methods {unknown}: use some of {list(METHODS)}')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'--device {device}: CUDA is not available here; pass --device cpu')
    store = RunCache(osp.join(work_dir, 'cells'), enabled=cache)
    n_cells = len(models) * len(bits) * len(methods) * len(seeds)
    done, results = 0, {}
    for model_name in models:
        # 1. FP model and its evaluation
        fp_model, cfg = load_fp_model(model_name, weights[model_name])
        dataset = val_dataset(val_dir, create_transform(**cfg, is_training=False), val_labels,
                              max_val_images)
        data_key = dict(model=model_name, weights=fingerprint(weights[model_name]),
                        val=dict(dir=osp.abspath(val_dir), images=len(dataset),
                                 labels=val_labels and fingerprint(val_labels),
                                 max_images=max_val_images))

        def evaluate(model, what):
            start = time.time()
            acc = top1(model.to(device), dataset, device, eval_batch_size, workers)
            log(f'{what}: top-1 {acc:.2f} % on {len(dataset)} images '
                f'({time.time() - start:.1f} s)')
            return acc

        fp = store.get(dict(data_key, kind='fp'))
        if fp is None:
            fp = store.put(dict(data_key, kind='fp'), evaluate(fp_model, f'{model_name} FP'))
        else:
            log(f'{model_name} FP: top-1 {fp:.2f} % (reused, {store.root})')
        results[model_name] = dict(fp=fp, quant={})
        # 2. quantized cells
        for setting in bits:
            w_bits, a_bits = parse_bits(setting)
            for method in methods:
                for seed in seeds:
                    done += 1
                    name = f'{model_name} {setting} {method} seed {seed}'
                    cell_budget = dict(budget, refresh_every=budget['refresh_every']
                                       if method == 'maskaq' else None)
                    key = dict(data_key, kind='quant', bits=setting, method=method, seed=seed,
                               budget=cell_budget, recipe=recipe)
                    student_path = osp.join(work_dir, 'students', f'{model_name}_{setting}_'
                                            f'{method}_seed{seed}.pth') if save else None
                    cell = store.get(key)
                    if cell is not None and (not save or osp.isfile(student_path)):
                        log(f'cell {done}/{n_cells} {name}: top-1 {cell["top1"]:.2f} % '
                            f'(reused, {store.path(key)})')
                    else:
                        log(f'cell {done}/{n_cells} {name}: quantizing ({cell_budget}, '
                            f'{device})')
                        start = time.time()
                        torch.manual_seed(seed)
                        student = _quantize(fp_model.to(device), cfg, w_bits, a_bits, method,
                                            seed, cell_budget, recipe)
                        seconds = time.time() - start
                        acc = evaluate(student, f'cell {done}/{n_cells} {name}')
                        if save:
                            from maskaq_plugin.quant import save_quantized
                            os.makedirs(osp.dirname(student_path), exist_ok=True)
                            torch.save(save_quantized(student), student_path)
                            log(f'saved the student to {student_path}')
                        cell = store.put(key, dict(top1=acc, quantize_seconds=round(seconds, 1),
                                                   device=device, student=student_path))
                    results[model_name]['quant'].setdefault(setting, {}).setdefault(
                        method, []).append(cell)
    # 3. the table
    rows = rows_of(results)
    header = (f'Table 1 (ICML 2026) on {len(dataset)} images of `{val_dir}`; budget '
              f'{budget} (refresh for maskaq only), seeds {list(seeds)}, recipe {recipe}.')
    text = markdown(rows, header)
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, 'table1.md'), 'w') as f:
        f.write(text)
    with open(osp.join(work_dir, 'table1.json'), 'w') as f:
        json.dump(dict(budget=budget, seeds=list(seeds), recipe=recipe, val_dir=val_dir,
                       val_images=len(dataset), rows=rows), f, indent=1)
    return dict(rows=rows, markdown=text, results=results)


def _quantize(model, cfg, w_bits, a_bits, method, seed, budget, recipe):
    from maskaq_plugin import quantize_data_free
    return quantize_data_free(model, input_size=tuple(cfg['input_size']),
                              num_classes=model_num_classes(model), mean=cfg['mean'],
                              std=cfg['std'], w_bits=w_bits, a_bits=a_bits, method=method,
                              seed=seed, recipe=recipe, **budget)


def model_num_classes(model) -> int:
    """Logits of ``model`` (timm ``num_classes``, else the mmpretrain head's)."""
    if hasattr(model, 'num_classes'):
        return model.num_classes
    return model.classifier.head.num_classes
