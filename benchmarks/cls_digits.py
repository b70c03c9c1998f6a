"""The classification benchmark's material: real digits, a tiny ViT, and its runs.

OpenCV's ``digits.png`` (Debian ``opencv-doc``): 5000 real 20x20 digits, split by grid
column as in :mod:`maskaq_plugin.datasets.digit_scenes` (columns 0-79 train, 80-99 test).
A tiny timm ViT trained on them once (``checkpoints/vit_tiny_digits.pth``) is the
full-precision model that ``tools/benchmark_cls.py`` quantizes;
:mod:`benchmarks.cls_factorial` reuses the calibration / QAT runs defined here.
"""
import copy
import math
import os
import os.path as osp
import re
import time

import numpy as np
import torch
import torch.nn.functional as F

from maskaq_plugin.datasets import digit_scenes

from .common import ROOT

CKPT = osp.join(ROOT, 'checkpoints', 'vit_tiny_digits.pth')
DOC = osp.join(ROOT, 'docs', 'benchmarks.md')
SECTION = '## Classification (digits, tiny ViT)'
VIT_CFG = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0,
               num_classes=10, drop_path_rate=0.1)
MEAN, STD = (0.1, ) * 3, (0.25, ) * 3  # close to the digits' pixel statistics


def load_digits(path=None):
    """``(x_train, y_train, x_test, y_test)``: uint8 ``(N, 20, 20)`` and int64 labels."""
    cells = digit_scenes.load_digit_cells(digit_scenes.find_digits_png(path))  # (10, 500, 20, 20)
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
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    background = ((0 - torch.tensor(MEAN).view(1, 3, 1, 1)) /
                  torch.tensor(STD).view(1, 3, 1, 1)).to(x.device)
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
            idx = idx.to(x_train.device)
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


RECIPE = 'lsq'  # the students' quantizers (tools/benchmark_cls.py --recipe sets it)
QUANT = {}  # extra QuantScheme options (--act-init)


def build_pair(fp, w_bits, a_bits):
    """``(teacher, student)``: F with explicit attention (frozen) and its fake-quantized Q
    (quantizers of :data:`RECIPE`)."""
    from maskaq_plugin.attention import make_attention_explicit
    from maskaq_plugin.quant import QuantScheme, quantize_model
    teacher = copy.deepcopy(fp)
    make_attention_explicit(teacher)
    q = quantize_model(teacher, QuantScheme(w_bits, a_bits, recipe=RECIPE, **QUANT),
                       torch.zeros(1, 3, 32, 32, device=next(fp.parameters()).device))
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
    device = next(fp.parameters()).device
    calibrate_ranges_(q, torch.maximum(torch.minimum(noise, hi), lo).to(device))
    return accuracy(q, x_test, y_test)


def real_subset(x_train, num_samples, seed):
    gen = torch.Generator().manual_seed(seed)
    return x_train[torch.randperm(len(x_train), generator=gen)[:num_samples].to(x_train.device)]


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
    device = next(fp.parameters()).device
    calibrate_ranges_(q, [b.to(device) for b in calib.split(bs)], subset_size=len(calib))
    calib_acc = accuracy(q, x_test, y_test)
    epochs = []
    run_classification_qat(
        teacher, q, train, mean=MEAN, std=STD, epochs=budget['epochs'], batch_size=bs,
        lr=lr or DEFAULT_LR, seed=seed, loss_kwargs=loss_kwargs,
        log=lambda msg: epochs.append({k: float(v) for k, v in re.findall(
            r'(\w+)=([-+0-9.eE]+)', msg.split(') ', 1)[1])}))
    with torch.no_grad():
        real = classification_qat_loss(teacher, q.eval(), x_test[:250].to(device),
                                       mssim_weight=1.0)
    return dict(calib_acc=calib_acc, acc=accuracy(q, x_test, y_test), first=epochs[0],
                last=epochs[-1], real_mssim=real['mssim'].item(), real_kd=real['kd'].item())


def qat_on_real(fp, w_bits, a_bits, x_train, budget, seed, x_test, y_test, loss_kwargs=None,
                lr=None):
    """Upper bound: MaskAQ's calibration and QAT (KD + 10·L_mssim) on real train digits."""
    real = real_subset(x_train, budget['num_samples'], seed)
    return calibrate_and_train(fp, w_bits, a_bits, real, real, dict(loss_kwargs or {}),
                               budget, seed, x_test, y_test, lr)['acc']


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
