"""Classification factorial: where the QAT images come from x which QAT loss.

Each image set (real digits or a method's synthetic images) is made once per seed and
reused by every loss, with diagnostics: the teacher's confidence on the images, accuracy
after calibration only, KD / L_mssim at the first and last QAT epoch, and L_mssim / KD of
the final student on real test digits. Run by ``tools/benchmark_cls.py --factorial``.
"""
import json
import time

import numpy as np
import torch

from .cls_digits import MEAN, STD, build_pair, calibrate_and_train, fmt, real_subset

# factorial QAT losses: name -> (label, classification_qat_loss kwargs)
FACTORIAL_LOSSES = {
    'kd': ('KD only', dict(mssim_weight=0.0)),
    'mssim10': ('KD + 10·L_mssim (masked)', dict(mssim_weight=10.0, w_high=2.0)),
    'mssim1': ('KD + 1·L_mssim (masked)', dict(mssim_weight=1.0, w_high=2.0)),
    'mssim10u': ('KD + 10·L_mssim (unmasked)', dict(mssim_weight=10.0, w_high=1.0)),
}
FACTORIAL_IMAGES = ('real', 'noise', 'psaq', 'mimiq', 'maskaq')


def factorial_images(fp, kind, w_bits, a_bits, budget, seed, x_train):
    """``(calibration set, QAT set)`` of one image source, as ``quantize_data_free`` makes them.

    Same seeds as the API: round 0 (the method's objective, no Q) calibrates the student;
    MaskAQ then trains on round 1 (synthesis with the calibrated Q in the loop, L_mad),
    the others on round 0. No refresh (the ablation rows measure it).
    """
    from maskaq_plugin.utils.seeding import derive_seed
    from maskaq_plugin.quant import calibrate_ranges_
    from maskaq_plugin.synthesis import ClassificationPrior, Synthesizer
    n, bs = budget['num_samples'], budget['batch_size']
    if kind == 'real':
        real = real_subset(x_train, n, seed)
        return real, real
    teacher, q = build_pair(fp, w_bits, a_bits)
    common = dict(prior=ClassificationPrior(10), input_size=(3, 32, 32), mean=MEAN, std=STD,
                  method=kind, iters=budget['synthesis_iters'], progress=False)
    round0 = Synthesizer(teacher, **common).synthesize(n, bs, seed=derive_seed(seed, 0))
    if kind != 'maskaq':
        return round0.images, round0.images
    device = next(fp.parameters()).device
    calibrate_ranges_(q, [b.to(device) for b in round0.images.split(bs)], subset_size=n)
    round1 = Synthesizer(teacher, student=q, **common).synthesize(
        n, bs, seed=derive_seed(seed, 1))
    return round0.images, round1.images


@torch.no_grad()
def teacher_confidence(fp, images):
    """Mean max-probability and entropy (nats) of F on ``images``, and how many classes win."""
    p = fp.eval()(images.to(next(fp.parameters()).device)).softmax(1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
    return dict(maxp=p.max(1).values.mean().item(), entropy=entropy.mean().item(),
                classes=int(p.argmax(1).unique().numel()))


def run_factorial(args, fp, budget, x_train, x_test, y_test, cache=None, base_key=None):
    """Images x QAT loss, each image set synthesized once per seed.

    ``args`` holds ``bits``, ``seeds``, ``factorial_images``, ``factorial_losses``, ``lr``
    and ``json`` (see tools/benchmark_cls.py); ``cache`` (a
    :class:`benchmarks.common.RunCache`) keeps each (images, loss, seed) cell under
    ``base_key`` plus the cell, and an image set is made only when one of its cells is
    missing. Returns the markdown tables and the wall time in seconds.
    """
    start_all, rows = time.time(), {}
    for bits in args.bits:
        w_bits, a_bits = int(bits[1:bits.index('A')]), int(bits[bits.index('A') + 1:])
        for seed in args.seeds:
            for kind in args.factorial_images:
                keys = {loss: dict(base_key or {}, run='factorial', bits=bits, seed=seed,
                                   images=kind, loss=FACTORIAL_LOSSES[loss][1])
                        for loss in args.factorial_losses}
                stored = {loss: cache.get(k) if cache else None for loss, k in keys.items()}
                if any(v is None for v in stored.values()):
                    start = time.time()
                    calib, train = factorial_images(fp, kind, w_bits, a_bits, budget, seed,
                                                    x_train)
                    conf = teacher_confidence(fp, train)
                    print(f'{bits} seed {seed} {kind}: images in {time.time() - start:.0f}s, '
                          f'teacher maxp {conf["maxp"]:.3f} entropy {conf["entropy"]:.3f} '
                          f'classes {conf["classes"]}', flush=True)
                for loss in args.factorial_losses:
                    out = stored[loss]
                    if out is None:
                        out = calibrate_and_train(fp, w_bits, a_bits, calib, train,
                                                  FACTORIAL_LOSSES[loss][1], budget, seed,
                                                  x_test, y_test, args.lr)
                        out.update(conf)
                        if cache:
                            cache.put(keys[loss], out)
                    rows.setdefault((bits, kind, loss), []).append(out)
                    print(f'  {loss:9s} calib {out["calib_acc"]:.2f} -> QAT {out["acc"]:.2f}'
                          f' | first {out["first"]} | last {out["last"]} | real-test '
                          f'L_mssim {out["real_mssim"]:.3f}', flush=True)
    total = time.time() - start_all
    mean = lambda runs, key: fmt([r[key] for r in runs])  # noqa: E731
    text = []
    for bits in args.bits:
        losses = args.factorial_losses
        text += [f'**{bits}, test accuracy (%) after QAT**, rows: where the images come '
                 'from, columns: the QAT loss (calibration-only column: the student '
                 'calibrated on those images, before QAT).', '',
                 '| images | calibration only | ' + ' | '.join(
                     FACTORIAL_LOSSES[k][0] for k in losses) + ' |',
                 '|---|' + '---|' * (1 + len(losses))]
        for kind in args.factorial_images:
            runs = rows[(bits, kind, losses[0])]
            text.append(f'| {kind} | {mean(runs, "calib_acc")} | ' + ' | '.join(
                mean(rows[(bits, kind, k)], 'acc') for k in losses) + ' |')
        text += ['', f'**{bits}, diagnostics** (mean over seeds): F\'s mean max-probability '
                 'and entropy (nats) on the QAT images, and how many of the 10 classes F '
                 'predicts on them; KD and L_mssim (masked, unweighted) in the first → last '
                 'QAT epoch on the synthetic set; L_mssim and KD of the final student on 250 '
                 'real test digits (the KD-only row of the same images shows how much QAT '
                 'alone moves L_mssim).', '',
                 '| images | F max-prob | F entropy | F classes | QAT loss | KD first → last '
                 '| L_mssim first → last | L_mssim on real digits | KD on real digits |',
                 '|---|---|---|---|---|---|---|---|---|']
        for kind in args.factorial_images:
            for k in losses:
                runs = rows[(bits, kind, k)]
                avg = lambda f: float(np.mean([f(r) for r in runs]))  # noqa: E731
                ms = (f'{avg(lambda r: r["first"]["mssim"]):.3f} → '
                      f'{avg(lambda r: r["last"]["mssim"]):.3f}'
                      if 'mssim' in runs[0]['first'] else '–')
                text.append(
                    f'| {kind} | {avg(lambda r: r["maxp"]):.3f} | '
                    f'{avg(lambda r: r["entropy"]):.3f} | {avg(lambda r: r["classes"]):.1f} | '
                    f'{FACTORIAL_LOSSES[k][0]} | {avg(lambda r: r["first"]["kd"]):.3f} → '
                    f'{avg(lambda r: r["last"]["kd"]):.3f} | {ms} | '
                    f'{avg(lambda r: r["real_mssim"]):.3f} | '
                    f'{avg(lambda r: r["real_kd"]):.3f} |')
        text.append('')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'/'.join(k): v for k, v in rows.items()}, f)
    return '\n'.join(text), total
