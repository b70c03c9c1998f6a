"""Data-free quantization of a tiny ViT on real handwritten digits: MaskAQ vs its baselines.

Steps:
    1. load OpenCV's ``digits.png`` (Debian ``opencv-doc``): 5000 real 20x20 digits, split
       by grid column as in tools/make_digit_scenes.py (columns 0-79 train, 80-99 test:
       4000 / 1000 images, 100 test digits per class);
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
"""
import argparse
import copy
import importlib.util
import json
import math
import os
import os.path as osp
import platform
import re
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CKPT = osp.join(ROOT, 'checkpoints', 'vit_tiny_digits.pth')
DOC = osp.join(ROOT, 'docs', 'benchmarks.md')
SECTION = '## Classification (digits, tiny ViT)'
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
# factorial QAT losses: name -> (label, classification_qat_loss kwargs)
FACTORIAL_LOSSES = {
    'kd': ('KD only', dict(mssim_weight=0.0)),
    'mssim10': ('KD + 10·L_mssim (masked)', dict(mssim_weight=10.0, w_high=2.0)),
    'mssim1': ('KD + 1·L_mssim (masked)', dict(mssim_weight=1.0, w_high=2.0)),
    'mssim10u': ('KD + 10·L_mssim (unmasked)', dict(mssim_weight=10.0, w_high=1.0)),
}
FACTORIAL_IMAGES = ('real', 'noise', 'psaq', 'mimiq', 'maskaq')
VIT_CFG = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0,
               num_classes=10, drop_path_rate=0.1)
MEAN, STD = (0.1, ) * 3, (0.25, ) * 3  # close to the digits' pixel statistics


def load_digits(path=None):
    """``(x_train, y_train, x_test, y_test)``: uint8 ``(N, 20, 20)`` and int64 labels."""
    spec = importlib.util.spec_from_file_location(
        'make_digit_scenes', osp.join(ROOT, 'tools', 'make_digit_scenes.py'))
    scenes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scenes)
    cells = scenes.load_digit_cells(scenes.find_digits_png(path))  # (10, 500, 20, 20)
    cells = cells.reshape(10, 5, 100, 20, 20)  # (class, row, column, 20, 20)
    train, test = cells[:, :, :80].reshape(10, -1, 20, 20), cells[:, :, 80:].reshape(
        10, -1, 20, 20)
    labels = lambda a: np.repeat(np.arange(10), a.shape[1])  # noqa: E731
    return (torch.from_numpy(train.reshape(-1, 20, 20)), torch.from_numpy(labels(train)),
            torch.from_numpy(test.reshape(-1, 20, 20)), torch.from_numpy(labels(test)))


def to_input(cells):
    """uint8 (N, 20, 20) -> normalised (N, 3, 32, 32): pad to 24, resize to 32."""
    x = F.pad(cells.float().div(255).unsqueeze(1), (2, 2, 2, 2))
    x = F.interpolate(x, size=32, mode='bilinear', align_corners=False).clamp(0, 1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / torch.tensor(STD).view(1, 3, 1, 1)


def build_vit():
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(**VIT_CFG)


@torch.no_grad()
def accuracy(model, x, y, batch=250):
    model.eval()
    hits = sum((model(xb).argmax(1) == yb).sum().item()
               for xb, yb in zip(x.split(batch), y.split(batch)))
    return 100.0 * hits / len(y)


def random_affine(x, gen):
    """Training augmentation: rotation ±10°, scale 0.9-1.1, shift ±3 px (per image)."""
    b = len(x)
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(b, generator=gen)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * (3 / 16)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = (0 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return F.grid_sample(x - background, grid, align_corners=False) + background


def train_fp(x_train, y_train, x_test, y_test, epochs=80, batch=128, seed=0):
    """Train the FP ViT (AdamW, cosine, label smoothing) and return it with its accuracy."""
    torch.manual_seed(seed)
    model = build_vit()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = epochs * math.ceil(len(y_train) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps,
                                                pct_start=0.1)
    for epoch in range(epochs):
        model.train()
        start = time.time()
        for idx in torch.randperm(len(y_train), generator=gen).split(batch):
            loss = F.cross_entropy(model(random_affine(x_train[idx], gen)), y_train[idx],
                                   label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
            print(f'  FP epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, test acc '
                  f'{accuracy(model, x_test, y_test):.2f}% ({time.time() - start:.1f}s/epoch)')
    return model.eval(), accuracy(model, x_test, y_test)


def load_or_train(data, retrain=False):
    """The cached FP model and its test accuracy (trained and saved when missing)."""
    if osp.isfile(CKPT) and not retrain:
        ckpt = torch.load(CKPT, map_location='cpu', weights_only=True)
        if ckpt['meta']['vit_cfg'] == VIT_CFG:
            model = build_vit()
            model.load_state_dict(ckpt['state_dict'])
            return model.eval(), ckpt['meta']['test_acc']
        print(f'{CKPT} was trained with another architecture; retraining')
    print('training the FP model (once; cached at checkpoints/vit_tiny_digits.pth; '
          '~20-50 min on 2 busy cores)')
    model, _ = train_fp(*data)
    return save_fp(model, data[2], data[3])


def save_fp(model, x_test, y_test):
    """Save ``model`` in fp16 (weights-only checkpoint) and return it with its accuracy."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in
             model.state_dict().items()}  # fp16 storage keeps the file small
    model.load_state_dict(state)  # the shipped (fp16-rounded) weights, in fp32
    acc = accuracy(model, x_test, y_test)
    meta = dict(vit_cfg=VIT_CFG, mean=list(MEAN), std=list(STD), test_acc=acc,
                split='digits.png grid columns 0-79 train / 80-99 test',
                recipe='train_fp(): AdamW 2e-3, wd 0.05, one-cycle, 80 epochs, batch 128, '
                'label smoothing 0.1, random affine, seed 0')
    os.makedirs(osp.dirname(CKPT), exist_ok=True)
    torch.save(dict(state_dict=state, meta=meta), CKPT)
    return model.eval(), acc


def build_pair(fp, w_bits, a_bits):
    """``(teacher, student)``: F with explicit attention (frozen) and its fake-quantized Q."""
    from maskaq_plugin.attention import make_attention_explicit
    from maskaq_plugin.quant import QuantScheme, quantize_model
    teacher = copy.deepcopy(fp)
    make_attention_explicit(teacher)
    q = quantize_model(teacher, QuantScheme(w_bits, a_bits), torch.zeros(1, 3, 32, 32))
    teacher.requires_grad_(False)  # after quantize_model: Q keeps trainable weights
    return teacher, q


def ptq_on_noise(fp, w_bits, a_bits, num_samples, seed, x_test, y_test):
    """Accuracy of the student calibrated on clamped N(0, 1) noise, without any QAT."""
    from maskaq_plugin.quant import calibrate_ranges_
    _, q = build_pair(fp, w_bits, a_bits)
    lo = ((0 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
    hi = ((1 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(num_samples, 3, 32, 32, generator=gen)
    calibrate_ranges_(q, torch.maximum(torch.minimum(noise, hi), lo))
    return accuracy(q, x_test, y_test)


def real_subset(x_train, num_samples, seed):
    gen = torch.Generator().manual_seed(seed)
    return x_train[torch.randperm(len(x_train), generator=gen)[:num_samples]]


def calibrate_and_train(fp, w_bits, a_bits, calib, train, loss_kwargs, budget, seed, x_test,
                        y_test, lr=None):
    """Calibrate a fresh student on ``calib``, QAT it on ``train``; accuracy and diagnostics.

    Returns a dict: ``calib_acc`` (test accuracy after calibration only), ``acc`` (after
    QAT), ``first`` / ``last`` (loss terms of the first / last QAT epoch) and
    ``real_mssim`` / ``real_kd`` (masked L_mssim and KD of the final student on 250 real
    test digits).
    """
    from maskaq_plugin.api import DEFAULT_LR
    from maskaq_plugin.qat import classification_qat_loss, run_classification_qat
    from maskaq_plugin.quant import calibrate_ranges_
    teacher, q = build_pair(fp, w_bits, a_bits)
    bs = budget['batch_size']
    calibrate_ranges_(q, list(calib.split(bs)), subset_size=len(calib))
    calib_acc = accuracy(q, x_test, y_test)
    epochs = []
    run_classification_qat(
        teacher, q, train, mean=MEAN, std=STD, epochs=budget['epochs'], batch_size=bs,
        lr=lr or DEFAULT_LR, seed=seed, loss_kwargs=loss_kwargs,
        log=lambda msg: epochs.append({k: float(v) for k, v in re.findall(
            r'(\w+)=([-+0-9.eE]+)', msg.split(') ', 1)[1])}))
    with torch.no_grad():
        real = classification_qat_loss(teacher, q.eval(), x_test[:250], mssim_weight=1.0)
    return dict(calib_acc=calib_acc, acc=accuracy(q, x_test, y_test), first=epochs[0],
                last=epochs[-1], real_mssim=real['mssim'].item(), real_kd=real['kd'].item())


def qat_on_real(fp, w_bits, a_bits, x_train, budget, seed, x_test, y_test, loss_kwargs=None,
                lr=None):
    """Upper bound: MaskAQ's calibration and QAT (KD + 10·L_mssim) on real train digits."""
    from maskaq_plugin.api import QAT_LOSS
    real = real_subset(x_train, budget['num_samples'], seed)
    return calibrate_and_train(fp, w_bits, a_bits, real, real,
                               dict(QAT_LOSS['maskaq'], **(loss_kwargs or {})), budget, seed,
                               x_test, y_test, lr)['acc']


def factorial_images(fp, kind, w_bits, a_bits, budget, seed, x_train):
    """``(calibration set, QAT set)`` of one image source, as ``quantize_data_free`` makes them.

    Same seeds as the API: round 0 (the method's objective, no Q) calibrates the student;
    MaskAQ then trains on round 1 (synthesis with the calibrated Q in the loop, L_mad),
    the others on round 0. No refresh (the ablation rows measure it).
    """
    from maskaq_plugin.api import _derived_seed
    from maskaq_plugin.quant import calibrate_ranges_
    from maskaq_plugin.synthesis import ClassificationPrior, Synthesizer
    n, bs = budget['num_samples'], budget['batch_size']
    if kind == 'real':
        real = real_subset(x_train, n, seed)
        return real, real
    teacher, q = build_pair(fp, w_bits, a_bits)
    common = dict(prior=ClassificationPrior(10), input_size=(3, 32, 32), mean=MEAN, std=STD,
                  method=kind, iters=budget['synthesis_iters'], progress=False)
    round0 = Synthesizer(teacher, **common).synthesize(n, bs, seed=_derived_seed(seed, 0))
    if kind != 'maskaq':
        return round0.images, round0.images
    calibrate_ranges_(q, list(round0.images.split(bs)), subset_size=n)
    round1 = Synthesizer(teacher, student=q, **common).synthesize(
        n, bs, seed=_derived_seed(seed, 1))
    return round0.images, round1.images


@torch.no_grad()
def teacher_confidence(fp, images):
    """Mean max-probability and entropy (nats) of F on ``images``, and how many classes win."""
    p = fp.eval()(images).softmax(1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
    return dict(maxp=p.max(1).values.mean().item(), entropy=entropy.mean().item(),
                classes=int(p.argmax(1).unique().numel()))


def fmt(values, digits=2):
    if len(values) == 1:
        return f'{values[0]:.{digits}f}'
    return f'{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}'


def write_section(text, block='main'):
    """Write ``text`` into the classification section of docs/benchmarks.md.

    When the section holds the markers ``<!-- benchmark_cls:<block> -->`` and
    ``<!-- /benchmark_cls:<block> -->``, only the text between them is replaced (the
    prose around stays); otherwise the whole section is replaced (or appended) by the
    section title and the marked block.
    """
    doc = open(DOC).read() if osp.isfile(DOC) else '# Benchmarks\n'
    open_tag, close_tag = f'<!-- benchmark_cls:{block} -->', f'<!-- /benchmark_cls:{block} -->'
    marked = f'{open_tag}\n{text.strip()}\n{close_tag}\n'
    start = doc.find(SECTION)
    end = doc.find('\n## ', start + len(SECTION)) if start >= 0 else -1
    section = doc[start:end + 1 if end >= 0 else len(doc)] if start >= 0 else ''
    if open_tag in section and close_tag in section:
        a, b = section.index(open_tag), section.index(close_tag) + len(close_tag) + 1
        new = section[:a] + marked + section[b:]
    else:
        new = f'{SECTION}\n\n{marked}\n'
    doc = (doc.rstrip('\n') + '\n\n' + new) if start < 0 else \
        doc[:start] + new + (doc[end + 1:] if end >= 0 else '')
    with open(DOC, 'w') as f:
        f.write(doc.rstrip('\n') + '\n')


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
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (default 1: a shared 2-core box)')
    parser.add_argument('--retrain', action='store_true', help='retrain the FP model')
    parser.add_argument('--no-write', action='store_true', help='do not edit docs/')
    parser.add_argument('--doc-block', default='main',
                        help='marked block of the section to write (default: main; '
                        '--factorial writes "factorial")')
    parser.add_argument('--json', help='also dump the raw results to this file')
    return parser.parse_args()


def budget_command(args, budget, refresh, extra=''):
    return 'python tools/benchmark_cls.py' + ''.join(
        f' --{k.replace("_", "-")} {v}' for k, v in budget.items()) + \
        f' --refresh-every {refresh} --threads {args.threads}' + \
        (f' --lr {args.lr:g}' if args.lr else '') + \
        f' --seeds {" ".join(map(str, args.seeds))}' + extra


def machine_note(args, total):
    return (f'{platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs, '
            f'{args.threads} torch thread(s); {total / 60:.1f} min')


def run_factorial(args, fp, budget, x_train, x_test, y_test):
    """Images x QAT loss, each image set synthesized once per seed; returns the markdown."""
    start_all, rows = time.time(), {}
    for bits in args.bits:
        w_bits, a_bits = int(bits[1:bits.index('A')]), int(bits[bits.index('A') + 1:])
        for seed in args.seeds:
            for kind in args.factorial_images:
                start = time.time()
                calib, train = factorial_images(fp, kind, w_bits, a_bits, budget, seed, x_train)
                conf = teacher_confidence(fp, train)
                print(f'{bits} seed {seed} {kind}: images in {time.time() - start:.0f}s, '
                      f'teacher maxp {conf["maxp"]:.3f} entropy {conf["entropy"]:.3f} '
                      f'classes {conf["classes"]}', flush=True)
                for loss in args.factorial_losses:
                    out = calibrate_and_train(fp, w_bits, a_bits, calib, train,
                                              FACTORIAL_LOSSES[loss][1], budget, seed, x_test,
                                              y_test, args.lr)
                    out.update(conf)
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
    extra = (f' --bits {" ".join(args.bits)} --factorial --factorial-images '
             f'{" ".join(args.factorial_images)} --factorial-losses '
             f'{" ".join(args.factorial_losses)}')
    text += [f'Command ({machine_note(args, total)}):', '', '```bash',
             budget_command(args, budget, args.refresh_every or max(1, args.epochs // 2),
                            extra), '```']
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'/'.join(k): v for k, v in rows.items()}, f)
    return '\n'.join(text), 'factorial'


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    from maskaq_plugin import quantize_data_free
    refresh = args.refresh_every or max(1, args.epochs // 2)
    # 1. data
    x_train, y_train, x_test, y_test = load_digits(args.digits)
    x_train, x_test = to_input(x_train), to_input(x_test)
    # 2. FP model
    fp, fp_acc = load_or_train((x_train, y_train, x_test, y_test), args.retrain)
    fp_acc = accuracy(fp, x_test, y_test)
    print(f'FP test accuracy {fp_acc:.2f}%')
    budget = dict(num_samples=args.num_samples, synthesis_iters=args.synthesis_iters,
                  batch_size=args.batch_size, epochs=args.epochs)
    if args.factorial:
        text, block = run_factorial(args, fp, budget, x_train, x_test, y_test)
        print(text)
        if not args.no_write:
            write_section(text, block)
        return
    # 3. every bit-width x method (and ablation) x seed, same budget
    qat_loss = {k: v for k, v in (('mssim_weight', args.mssim_weight),
                                  ('w_high', args.w_high)) if v is not None}
    rows = [(m, m, {}) for m in args.methods] + [
        (f'maskaq:{a}', ABLATIONS[a][0], ABLATIONS[a][1]) for a in args.ablations]
    results, ptq, real, start_all = {}, {}, {}, time.time()
    for bits in args.bits:
        w_bits, a_bits = int(bits[1:bits.index('A')]), int(bits[bits.index('A') + 1:])
        if not args.skip_refs:
            ptq[bits] = [ptq_on_noise(fp, w_bits, a_bits, args.num_samples, seed, x_test,
                                      y_test) for seed in args.seeds]
            real[bits] = [qat_on_real(fp, w_bits, a_bits, x_train, budget, seed, x_test,
                                      y_test, qat_loss, args.lr) for seed in args.seeds]
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
                start = time.time()
                q = quantize_data_free(
                    fp, input_size=(3, 32, 32), num_classes=10, mean=MEAN, std=STD,
                    w_bits=w_bits, a_bits=a_bits, method=method, seed=seed, progress=False,
                    lr=args.lr, **budget, **kwargs)
                seconds = time.time() - start
                acc = accuracy(q, x_test, y_test)
                results.setdefault((bits, key), []).append((acc, seconds))
                print(f'{bits} {label} seed {seed}: {acc:.2f}% in {seconds:.0f}s', flush=True)
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
            cells += [fmt([a for a, _ in runs]), fmt([s for _, s in runs], digits=0)]
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
        f'. Seeds: {", ".join(map(str, args.seeds))}'
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
