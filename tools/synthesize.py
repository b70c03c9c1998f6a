"""Synthesize a MaskAQ sample bank without training, and preview it.

Builds the MaskAQ model of a config and runs, with its ``SampleRefreshHook`` options, the
round service that the hook runs before training (``maskaq_plugin.synthesis.rounds``;
round 0: bootstrap synthesis, calibration of the student's ranges, synthesis with the
student in the loop), saving the bank under ``OUT/sample_bank`` and PNG previews under
``OUT/previews``: each image beside a copy with F's informative region (the top 10 % of
patch keys by attention, the mask MaskAQ uses at the end of synthesis) tinted red, and,
for detection, the prior's random boxes. With ``--checkpoint`` (a checkpoint of a MaskAQ
run) the round recorded in it is synthesised against its trained student, without
recalibration. Examples::

    python tools/synthesize.py configs/mmdet/maskaq_maskrcnn_swin-tiny_digits_w4a8.py \
        --out work_dirs/synth --num-samples 16 --preview 8
    python tools/synthesize.py CONFIG --checkpoint work_dirs/run1/epoch_3.pth --out OUT
    python tools/synthesize.py CONFIG --out OUT --device cpu   # default: cuda if available
"""
import argparse
import math
import os
import os.path as osp
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import DictAction
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout
import maskaq_plugin  # noqa: E402,F401  (registers components and safe checkpoint globals)
from maskaq_plugin.attention import AttentionRecorder  # noqa: E402
from maskaq_plugin.engine.hooks import SampleRefreshHook  # noqa: E402
from maskaq_plugin.engine.hooks.sample_refresh_hook import META_KEY  # noqa: E402
from maskaq_plugin.losses.functional import informative_region_mask  # noqa: E402
from maskaq_plugin.synthesis.bank import SampleBank  # noqa: E402
from maskaq_plugin.synthesis.rounds import RoundService  # noqa: E402
from maskaq_plugin.utils import (add_device_argument, device_or_exit, load_config,  # noqa: E402
                                 use_runner_device)

PREVIEW_RATIO = 0.1  # ρ at the end of synthesis (docs/method.md)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Synthesize a MaskAQ sample bank')
    parser.add_argument('config', help='MaskAQ config file path')
    parser.add_argument('--checkpoint', help='checkpoint of a MaskAQ run (optional)')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--num-samples', type=int, help='images to synthesize')
    parser.add_argument('--preview', type=int, default=8, help='PNG previews to write')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value')
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if args.num_samples is not None and args.num_samples < 1:
        parser.error(f'--num-samples must be >= 1, got {args.num_samples}')
    if args.preview < 0:
        parser.error(f'--preview must be >= 0, got {args.preview}')
    if args.checkpoint and not osp.isfile(args.checkpoint):
        parser.error(f'--checkpoint {args.checkpoint!r} does not exist')
    return args


def token_masks(backbone, images, ratio=PREVIEW_RATIO):
    """``(N, H, W)`` 0/1 masks: F's informative patch keys of the first attention layer.

    ``backbone`` is F's module whose attention is recorded (``algo.teacher.backbone``, or
    a whole timm ViT). Window attention (Swin) is un-partitioned to the token grid;
    spatial-reduction attention (PVT, MiT) gives the mask on its reduced key grid; both
    are resized to the image (nearest).
    """
    with torch.no_grad(), AttentionRecorder(backbone, detach=True) as rec:
        backbone(images)
    first = rec.records[0]
    mask = informative_region_mask([first.scores], ratio=ratio,
                                   has_cls_token=first.has_cls_token, drop=0.0)
    n, (h, w) = images.shape[0], images.shape[-2:]
    if first.num_windows > 1:  # (N * nW, ws * ws) -> (N, nh * ws, nw * ws)
        ws = math.isqrt(mask.shape[1])
        nh = max(1, round(math.sqrt(first.num_windows * h / w)))
        nw = first.num_windows // nh
        grid = mask.view(n, nh, nw, ws, ws).permute(0, 1, 3, 2, 4).reshape(
            n, nh * ws, nw * ws)
    else:  # (N, P) on a gh x gw key grid
        p = mask.shape[1]
        gh = max(1, round(math.sqrt(p * h / w)))
        grid = mask.view(n, gh, p // gh)
    return F.interpolate(grid[:, None].float(), size=(h, w), mode='nearest')[:, 0]


def to_bgr(images, norm):
    """Normalised ``(N, C, H, W)`` images -> uint8 ``(H, W, 3)`` BGR arrays for cv2.

    ``norm``: ``mean`` and ``std`` in pixel units (0-255) and ``bgr_to_rgb`` (the model
    takes RGB), as ``algo.norm``.
    """
    mean = np.array(norm['mean'], np.float32).reshape(-1, 1, 1)
    std = np.array(norm['std'], np.float32).reshape(-1, 1, 1)
    out = []
    for image in images.detach().cpu().numpy():
        raw = np.clip(image * std + mean, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        if norm['bgr_to_rgb']:  # model order RGB -> cv2's BGR
            raw = raw[..., ::-1]
        out.append(np.ascontiguousarray(raw))
    return out


def tint(raw, mask, boxes=None):
    """A copy of ``raw`` with ``mask > 0`` tinted red (50 %) and ``boxes`` (xyxy) in green."""
    tinted = raw.copy()
    red = np.zeros_like(raw)
    red[..., 2] = 255
    sel = mask > 0
    tinted[sel] = (0.5 * raw[sel] + 0.5 * red[sel]).astype(np.uint8)
    for box in [] if boxes is None else boxes.round().int().tolist():
        cv2.rectangle(tinted, tuple(box[:2]), tuple(box[2:]), (0, 255, 0), 1)
    return tinted


def write_previews(algo, bank_dir, k, count, out_dir):
    """Write ``count`` PNGs of round ``k``; return their paths."""
    data = SampleBank(bank_dir).load_round(k)
    images = data['images'][:count]
    targets = data['targets'][:count]
    device = next(algo.teacher.parameters()).device
    masks = token_masks(algo.teacher.backbone, images.to(device)).cpu().numpy()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, (raw, mask, target) in enumerate(zip(to_bgr(images, algo.norm), masks, targets)):
        boxes = target['bboxes'] if isinstance(target, dict) and 'bboxes' in target else None
        path = osp.join(out_dir, f'round{k}_{i:03d}.png')
        cv2.imwrite(path, np.concatenate([raw, tint(raw, mask, boxes)], axis=1))
        paths.append(path)
    return paths


def synthesize_round(args, device):
    """Build the MaskAQ model of ``args.config`` and synthesise its bank's round.

    Returns ``(algo, runner, bank_dir, k)``: the algorithm (teacher F, calibrated student
    Q), its runner, the bank directory and the round written.
    """
    cfg = load_config(args.config, args.cfg_options, work_dir=args.out)
    hooks = [h for h in cfg.get('custom_hooks', []) if h.get('type') == 'SampleRefreshHook']
    if not hooks:
        raise SystemExit(f'{args.config} has no SampleRefreshHook in custom_hooks; use a '
                         'MaskAQ config (configs/*/maskaq_*.py)')
    bank_dir = osp.abspath(osp.join(args.out, 'sample_bank'))
    cfg.train_dataloader.dataset.bank_dir = bank_dir
    if args.num_samples:
        cfg.train_dataloader.dataset.num_samples = args.num_samples
        hooks[0].num_samples = args.num_samples
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h.get('type') != 'MaskAQExportHook']
    cfg.resume, cfg.load_from = False, None

    use_runner_device(cfg, device)
    runner = Runner.from_cfg(cfg)  # builds the model (and the hook, validating its options)
    hook = next(h for h in runner.hooks if isinstance(h, SampleRefreshHook))
    algo = runner.model.module if is_model_wrapper(runner.model) else runner.model
    options = dict(hook.options, num_samples=hook.options['num_samples']
                   or cfg.train_dataloader.dataset.num_samples)
    rounds = RoundService.for_algorithm(
        algo, SampleBank(bank_dir, fingerprint=algo.fingerprint()),
        seed=int(hook.seed if hook.seed is not None else runner.seed or 0),
        log=lambda msg, level: runner.logger.log(level, msg), **options)
    meta = None
    if args.checkpoint:  # the round recorded in the run, against its trained student
        checkpoint = runner.load_checkpoint(args.checkpoint, map_location='cpu')
        meta = checkpoint.get('meta', {}).get(META_KEY)
    if meta is not None:
        rounds.resume(int(meta['refresh_round']), meta.get('manifest_sha256'))
    else:
        rounds.start()
    runner.logger.info(f'sample bank round {rounds.round} written to {bank_dir}')
    return algo, runner, bank_dir, rounds.round


def main(argv=None):
    args = parse_args(argv)
    algo, runner, bank_dir, k = synthesize_round(args, device_or_exit(args.device))
    if args.preview:
        paths = write_previews(algo, bank_dir, k, args.preview, osp.join(args.out, 'previews'))
        runner.logger.info(f'{len(paths)} previews in {osp.dirname(paths[0])}')
    return bank_dir


if __name__ == '__main__':
    main()
