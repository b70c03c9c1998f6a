"""Data-free quantization of a tiny ViT on real handwritten digits: MaskAQ vs its baselines.

Steps:
    1. load OpenCV's ``digits.png`` (Debian ``opencv-doc``): 5000 real 20x20 digits, split
       by grid column as in maskaq_plugin/datasets/digit_scenes.py (columns 0-79 train,
       80-99 test: 4000 / 1000 images, 100 test digits per class);
    2. train a tiny timm ViT (32x32 input, patch 4, dim 64, depth 4, 4 heads, class
       token) once and cache it at ``checkpoints/vit_tiny_digits.pth`` with its FP test
       accuracy (weights-only checkpoint); later runs reuse it;
    3. for each bit-width, method of :func:`maskaq_plugin.quantize_data_free` and seed,
       quantize the FP model without data (same num_samples, synthesis_iters, epochs and
       batch size for every method) and measure test accuracy and wall time; two
       reference rows bracket them: the student calibrated on noise without QAT, and
       MaskAQ's calibration + QAT on as many *real* train digits (the upper bound);
       ``--ablations`` adds MaskAQ rows without ``L_ent``, without ``L_mad``, without
       refresh, with a random instead of an informative mask, or with a KD-only QAT loss;
    4. write the table (mean ± std over seeds when there are several) into the section
       "Classification (digits, tiny ViT)" of docs/benchmarks.md (between the
       ``<!-- benchmark_cls:main -->`` markers when the section has them).

``--factorial`` runs another experiment instead: the synthetic images of a method
(``--factorial-images``) crossed with a QAT loss (``--factorial-losses``), each image
set synthesized once per seed and reused by every loss, with diagnostics (teacher
confidence on the images, accuracy after calibration only, KD / L_mssim at the first and
last QAT epoch, L_mssim on real test digits); it writes between the
``<!-- benchmark_cls:factorial -->`` markers.

Examples:
    python tools/benchmark_cls.py                        # default budget, 1 seed
    python tools/benchmark_cls.py --seeds 0 1 2 --bits W4A4
    python tools/benchmark_cls.py --methods noise maskaq --num-samples 64 --no-write
    python tools/benchmark_cls.py --bits W4A4 --methods maskaq --skip-refs \\
        --ablations no-ent no-mad no-refresh random-mask
    python tools/benchmark_cls.py --bits W4A4 --mssim-weight 0   # every method KD only
    python tools/benchmark_cls.py --factorial --bits W4A4 --seeds 0 1 2
    python tools/benchmark_cls.py --device cuda          # default: cuda when available
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import platform
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # the benchmarks package lives beside tools/

from benchmarks.cls_digits import (CKPT, MEAN, STD, VIT_CFG, accuracy, fmt,  # noqa: E402
                                   load_digits, load_or_train, ptq_on_noise, qat_on_real,
                                   to_input, write_section)
from benchmarks.common import RunCache  # noqa: E402
from maskaq_plugin.utils import add_device_argument, device_or_exit  # noqa: E402
from benchmarks.cls_factorial import FACTORIAL_IMAGES, FACTORIAL_LOSSES, run_factorial  # noqa: E402

METHODS = ('noise', 'psaq', 'mimiq', 'maskaq')
# MaskAQ ablations (issue #4): name -> (row label, quantize_data_free overrides)
ABLATIONS = {
    'no-ent': ('maskaq w/o L_ent', dict(synthesis=dict(loss_weights=dict(ent=0.0)))),
    'no-mad': ('maskaq w/o L_mad', dict(synthesis=dict(loss_weights=dict(mad=0.0)))),
    'no-refresh': ('maskaq w/o refresh', dict(refresh_every=None)),
    'random-mask': ('maskaq, random mask (L_mad and L_mssim)',
                    dict(synthesis=dict(mask_mode='random'),
                         qat_loss=dict(mask_mode='random'))),
    'kd-only': ('maskaq, KD-only QAT (λ = 0)', dict(qat_loss=dict(mssim_weight=0.0))),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--digits', help='path of digits.png (default: opencv-doc)')
    parser.add_argument('--bits', nargs='+', default=['W4A8', 'W4A4'])
    parser.add_argument('--methods', nargs='*', default=list(METHODS), choices=METHODS,
                        help='methods to run (none: only the --ablations rows)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--num-samples', type=int, default=64)
    parser.add_argument('--synthesis-iters', type=int, default=100)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--epochs', type=int, default=20)
    parser.add_argument('--refresh-every', type=int, default=None,
                        help='MaskAQ refresh period (default: epochs // 2, one refresh; the '
                        'paper refreshes every 30 of 100 epochs)')
    parser.add_argument('--lr', type=float, default=None,
                        help='QAT learning rate of every run (default: the API\'s 1e-3)')
    parser.add_argument('--mssim-weight', type=float, default=None,
                        help='override λ of every method\'s QAT loss (and of the real-data '
                        'reference), e.g. 0 for KD only (default: the method\'s own: 10 for '
                        'maskaq and mimiq, 0 for psaq and noise)')
    parser.add_argument('--w-high', type=float, default=None,
                        help='override the L_mssim weight of the important tokens (1: '
                        'unmasked)')
    parser.add_argument('--top-ratio', type=float, default=None,
                        help='override the fraction of tokens that L_mssim weights w_high '
                        '(default 0.1: the top 10 %%)')
    parser.add_argument('--ablations', nargs='*', default=[], choices=list(ABLATIONS),
                        help='extra MaskAQ rows: ' + ', '.join(
                            f'{k} ({v[0]})' for k, v in ABLATIONS.items()))
    parser.add_argument('--skip-refs', action='store_true',
                        help='leave out the two reference rows (PTQ on noise, real data)')
    parser.add_argument('--factorial', action='store_true',
                        help='run the images x QAT-loss factorial instead of the table')
    parser.add_argument('--factorial-images', nargs='+', default=list(FACTORIAL_IMAGES),
                        choices=FACTORIAL_IMAGES)
    parser.add_argument('--factorial-losses', nargs='+', default=['kd', 'mssim10', 'mssim1'],
                        choices=list(FACTORIAL_LOSSES),
                        help='; '.join(f'{k}: {v[0]}' for k, v in FACTORIAL_LOSSES.items()))
    parser.add_argument('--recipe', default='lsq', choices=['lsq', 'nncf'],
                        help="the students' fake quantizers, the same for every row "
                        "(lsq: the authors'; nncf: NNCF's trainable scales)")
    parser.add_argument('--act-init', default=None, choices=['lsq', 'minmax'],
                        help="recipe lsq: activation init (lsq: the authors' 2*mean|x|/"
                        "sqrt(Q_p); minmax: the calibration's mean min-max range)")
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (default 1: a shared 2-core box)')
    parser.add_argument('--retrain', action='store_true', help='retrain the FP model')
    parser.add_argument('--no-write', action='store_true', help='do not edit docs/')
    parser.add_argument('--doc-block', default='main',
                        help='marked block of the section to write (default: main; '
                        '--factorial writes "factorial")')
    parser.add_argument('--json', help='also dump the raw results to this file')
    parser.add_argument('--cache-dir', default=osp.join(ROOT, 'work_dirs', 'benchmark_cls'),
                        help='one JSON file per finished run, keyed by its arguments and '
                        'the code; a later call reuses them (an interrupted call loses '
                        'only the run in progress)')
    parser.add_argument('--no-cache', action='store_true',
                        help='run everything again, store nothing')
    add_device_argument(parser)
    args = parser.parse_args()
    args.device = device_or_exit(args.device)
    return args


def budget_command(args, budget, refresh, extra=''):
    return 'python tools/benchmark_cls.py' + ''.join(
        f' --{k.replace("_", "-")} {v}' for k, v in budget.items()) + \
        f' --refresh-every {refresh} --threads {args.threads}' + \
        (f' --device {args.device}' if args.device.type != 'cpu' else '') + \
        (f' --lr {args.lr:g}' if args.lr else '') + \
        f' --seeds {" ".join(map(str, args.seeds))}' + extra


def machine_note(args, total):
    gpu = f', on {torch.cuda.get_device_name(args.device)}' if args.device.type == 'cuda' else ''
    return (f'{platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs, '
            f'{args.threads} torch thread(s){gpu}; {total / 60:.1f} min')


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    from maskaq_plugin import quantize_data_free
    import benchmarks.cls_digits as cls_digits
    cls_digits.RECIPE = args.recipe
    quant = dict(act_init=args.act_init) if args.act_init else {}
    cls_digits.QUANT = quant
    refresh = args.refresh_every or max(1, args.epochs // 2)
    # 1. data
    x_train, y_train, x_test, y_test = load_digits(args.digits)
    x_train, x_test = to_input(x_train), to_input(x_test)
    # 2. FP model
    fp, fp_acc = load_or_train((x_train, y_train, x_test, y_test), args.retrain)
    fp = fp.to(args.device)  # quantize_data_free runs where the model's parameters are
    x_train, y_train, x_test, y_test = (t.to(args.device)
                                        for t in (x_train, y_train, x_test, y_test))
    fp_acc = accuracy(fp, x_test, y_test)
    print(f'FP test accuracy {fp_acc:.2f}%')
    budget = dict(num_samples=args.num_samples, synthesis_iters=args.synthesis_iters,
                  batch_size=args.batch_size, epochs=args.epochs)
    cache = RunCache(args.cache_dir, enabled=not args.no_cache)
    with open(CKPT, 'rb') as f:  # the FP model is part of every run's key
        fp_id = hashlib.sha256(f.read()).hexdigest()[:16]
    base_key = dict(budget=budget, recipe=args.recipe, quant=quant, lr=args.lr, fp=fp_id,
                    digits=args.digits, threads=args.threads)
    if args.device.type != 'cpu':  # CPU keys as before: earlier stored runs stay valid
        base_key['device'] = str(args.device)
    if args.factorial:
        text, total = run_factorial(args, fp, budget, x_train, x_test, y_test, cache,
                                    base_key)
        extra = (f' --bits {" ".join(args.bits)} --factorial --factorial-images '
                 f'{" ".join(args.factorial_images)} --factorial-losses '
                 f'{" ".join(args.factorial_losses)}')
        if args.recipe != 'lsq':
            extra += f' --recipe {args.recipe}'
        if args.act_init:
            extra += f' --act-init {args.act_init}'
        command = budget_command(args, budget, refresh, extra)
        text += f'\n\nCommand ({machine_note(args, total)}):\n\n```bash\n{command}\n```'
        print(text)
        if not args.no_write:
            write_section(text, 'factorial')
        return
    # 3. every bit-width x method (and ablation) x seed, same budget
    qat_loss = {k: v for k, v in (('mssim_weight', args.mssim_weight),
                                  ('w_high', args.w_high),
                                  ('top_ratio', args.top_ratio)) if v is not None}
    rows = [(m, m, {}) for m in args.methods] + [
        (f'maskaq:{a}', ABLATIONS[a][0], ABLATIONS[a][1]) for a in args.ablations]
    results, ptq, real, start_all = {}, {}, {}, time.time()
    for bits in args.bits:
        w_bits, a_bits = int(bits[1:bits.index('A')]), int(bits[bits.index('A') + 1:])
        if not args.skip_refs:
            ptq[bits] = [cache.run(
                dict(base_key, run='ptq-noise', bits=bits, seed=seed),
                lambda: ptq_on_noise(fp, w_bits, a_bits, args.num_samples, seed, x_test,
                                     y_test)) for seed in args.seeds]
            real[bits] = [cache.run(
                dict(base_key, run='qat-real', bits=bits, seed=seed, qat_loss=qat_loss),
                lambda: qat_on_real(fp, w_bits, a_bits, x_train, budget, seed, x_test,
                                    y_test, qat_loss, args.lr)) for seed in args.seeds]
            print(f'{bits} PTQ on noise (no QAT): {fmt(ptq[bits])}%, real-data QAT: '
                  f'{fmt(real[bits])}%', flush=True)
        for key, label, overrides in rows:
            method = key.split(':')[0]
            kwargs = dict(refresh_every=refresh if method == 'maskaq' else None,
                          qat_loss=dict(qat_loss))
            for name, value in overrides.items():
                kwargs[name] = dict(kwargs.get(name) or {}, **value) \
                    if isinstance(value, dict) else value
            for seed in args.seeds:
                def one_run():
                    start = time.time()
                    q = quantize_data_free(
                        fp, input_size=(3, 32, 32), num_classes=10, mean=MEAN, std=STD,
                        w_bits=w_bits, a_bits=a_bits, method=method, seed=seed,
                        progress=False, lr=args.lr, recipe=args.recipe, quant=quant,
                        **budget, **kwargs)
                    return [accuracy(q, x_test, y_test), time.time() - start]

                run_key = dict(base_key, run='method', bits=bits, seed=seed, method=method,
                               kwargs=kwargs)
                cached = cache.get(run_key) is not None
                acc, seconds = cache.run(run_key, one_run)
                results.setdefault((bits, key), []).append((acc, seconds))
                print(f'{bits} {label} seed {seed}: {acc:.2f}% in {seconds:.0f}s'
                      + (' (stored run)' if cached else ''), flush=True)
    total = time.time() - start_all
    # 4. table
    extra = ''.join(f' --{k.replace("_", "-")} {v:g}' for k, v in qat_loss.items())
    if args.bits != ['W4A8', 'W4A4']:
        extra += f' --bits {" ".join(args.bits)}'
    if args.methods != list(METHODS):
        extra += f' --methods {" ".join(args.methods)}'.rstrip()
    if args.ablations:
        extra += f' --ablations {" ".join(args.ablations)}'
    if args.skip_refs:
        extra += ' --skip-refs'
    if args.doc_block != 'main':
        extra += f' --doc-block {args.doc_block}'
    if args.recipe != 'lsq':
        extra += f' --recipe {args.recipe}'
    if args.act_init:
        extra += f' --act-init {args.act_init}'
    head = '| method | ' + ' | '.join(f'{b} acc (%) | {b} time (s)' for b in args.bits) + ' |'
    table = [head, '|' + '---|' * (1 + 2 * len(args.bits)),
             '| FP (32-bit) | ' + ' | '.join(f'{fp_acc:.2f} | –' for _ in args.bits) + ' |']
    if not args.skip_refs:
        table.append('| *reference: noise calibration only, no QAT* | ' + ' | '.join(
            f'{fmt(ptq[b])} | –' for b in args.bits) + ' |')
        table.append(f'| *reference: real data ({args.num_samples} train digits), MaskAQ\'s '
                     'calibration + QAT* | ' + ' | '.join(f'{fmt(real[b])} | –'
                                                          for b in args.bits) + ' |')
    for key, label, _ in rows:
        cells = []
        for bits in args.bits:
            runs = results[(bits, key)]
            per_seed = ' / '.join(f'{a:.1f}' for a, _ in runs) if len(runs) > 1 else ''
            cells += [fmt([a for a, _ in runs]) + (f' ({per_seed})' if per_seed else ''),
                      fmt([s for _, s in runs], digits=0)]
        table.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    text = '\n'.join([
        f'Tiny timm ViT ({VIT_CFG["embed_dim"]}-dim, depth {VIT_CFG["depth"]}, '
        f'{VIT_CFG["num_heads"]} heads, patch 4, 32x32 input) trained on 4000 real '
        'handwritten digits of OpenCV\'s `digits.png`; accuracy on the 1000 held-out '
        'digits. Every method gets the same budget: '
        f'{args.num_samples} synthetic images, {args.synthesis_iters} synthesis '
        f'iterations per batch, {args.epochs} QAT epochs, batch {args.batch_size}; '
        f'MaskAQ also refreshes its set every {refresh} epochs (the time column shows '
        f'what that costs)'
        + (f'; QAT loss overrides for every row: {qat_loss}' if qat_loss else '') +
        f'. Quantizers: recipe `{args.recipe}`'
        + (f', act_init `{args.act_init}`' if args.act_init else '')
        + f'. Seeds: {", ".join(map(str, args.seeds))}'
        f'{" (mean ± std)" if len(args.seeds) > 1 else ""}.', '', *table, '',
        f'Command ({machine_note(args, total)}):', '',
        '```bash', budget_command(args, budget, refresh, extra), '```', ''])
    print(text)
    if not args.no_write:
        write_section(text, args.doc_block)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({f'{b}/{m}': v for (b, m), v in results.items()} | {'fp': fp_acc}, f)


if __name__ == '__main__':
    main()
