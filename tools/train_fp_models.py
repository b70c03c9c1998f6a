"""Train, evaluate and ship the tiny full-precision models of the digit-scene demos.

Steps:
    1. generate the digit scenes (:mod:`maskaq_plugin.datasets.digit_scenes`) unless
       ``meta.json`` matches;
    2. train each model with MMEngine's Runner from its config (CPU, one thread: the
       detector ~55 min, the segmentor ~20 min); the segmentor's backbone starts from the
       just-trained detector's, and its heads learn at 15x the backbone's lr (with one lr
       it stayed on the plateau "background + all digits as one class", mIoU ~9 %);
    3. evaluate it on the val split (CocoMetric bbox+segm / IoUMetric mIoU);
    4. save a weights-only checkpoint (``state_dict`` + plain-typed ``meta``; loads with
       ``torch.load(weights_only=True)``) and record the metrics in ``fp_metrics.json``.

Examples:
    python tools/train_fp_models.py                      # both models -> checkpoints/
    python tools/train_fp_models.py --models det --cfg-options train_cfg.max_epochs=1
    python tools/train_fp_models.py --device cpu         # default: cuda when available
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
from mmengine.config import Config, DictAction
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout
from maskaq_plugin.datasets import digit_scenes  # noqa: E402
from maskaq_plugin.utils import (add_device_argument, device_or_exit,  # noqa: E402
                                 use_runner_device)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODELS = {
    'det': dict(name='maskrcnn_swin-tiny_digits',
                config='configs/mmdet/maskrcnn_swin-tiny_fp_digits.py',
                keys=('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75',
                      'coco/segm_mAP', 'coco/segm_mAP_50', 'coco/segm_mAP_75')),
    'seg': dict(name='upernet_swin-tiny_digits',
                config='configs/mmseg/upernet_swin-tiny_fp_digits.py',
                keys=('mIoU', 'mAcc', 'aAcc'), backbone_from='det',
                # Training-only overrides, kept out of the config so that the MaskAQ configs
                # inheriting its model keep the plain loss for their L_sem prior: background
                # (~92 % of the pixels) weighs 0.2 in both heads' cross-entropy.
                cfg_options={
                    f'model.{head}.loss_decode.class_weight': [0.2] + [1.0] * 10
                    for head in ('decode_head', 'auxiliary_head')}),
}


def ensure_data(data_root, num_train, num_val, seed):
    """Generate the digit scenes unless ``<data_root>/meta.json`` already describes them."""
    wanted = dict(format_version=digit_scenes.FORMAT_VERSION, seed=seed, size=128,
                  num_train=num_train, num_val=num_val)
    meta_path = osp.join(data_root, 'meta.json')
    if osp.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if all(meta.get(k) == v for k, v in wanted.items()):
            return meta
    return digit_scenes.generate(data_root, num_train, num_val, size=128, seed=seed)


def set_data_root(cfg, data_root):
    """Point every dataset (and the COCO evaluators' ann_file) of ``cfg`` at ``data_root``."""
    data_root = data_root.rstrip('/') + '/'
    cfg.data_root = data_root
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if loader is not None:
            loader.dataset.data_root = data_root
        evaluator = cfg.get(f'{split}_evaluator')
        if split != 'train' and evaluator is not None and evaluator.get('ann_file'):
            evaluator.ann_file = osp.join(data_root, loader.dataset.ann_file)
    return cfg


def to_plain(obj):
    """Recursively convert config values to JSON/weights-only-safe plain Python types."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return float(obj) if hasattr(obj, '__float__') else str(obj)


def save_weights(model, cfg, metrics, path):
    """Save ``dict(state_dict=..., meta=...)`` holding only tensors and plain types."""
    state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    meta = dict(
        cfg=cfg.pretty_text,
        dataset_meta=to_plain(model.dataset_meta if hasattr(model, 'dataset_meta') else {}),
        metrics=to_plain(metrics),
        seed=int(cfg.randomness.seed),
        mmengine_version=__import__('mmengine').__version__,
        torch_version=str(torch.__version__))
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    torch.save(dict(state_dict=state_dict, meta=meta), path)
    torch.load(path, map_location='cpu', weights_only=True)  # fail here, not for users
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def train_one(kind, args):
    spec = MODELS[kind]
    cfg = Config.fromfile(osp.join(ROOT, spec['config']))
    set_data_root(cfg, args.data_root)
    cfg.work_dir = osp.join(args.work_dir, spec['name'])
    if spec.get('backbone_from'):
        # mmdet's and mmseg's SwinTransformer share their state-dict layout; mmseg's
        # init_weights strips the 'backbone.' prefix and ignores the detector's other keys.
        init = osp.join(args.out_dir, MODELS[spec['backbone_from']]['name'] + '.pth')
        if not osp.isfile(init):
            raise FileNotFoundError(f'{init} is missing: train the detector first '
                                    f'(--models det seg)')
        cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=init)
    cfg.merge_from_dict(spec.get('cfg_options', {}))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    use_runner_device(cfg, args.device)
    runner = Runner.from_cfg(cfg)
    start = time.time()
    runner.train()  # both train loops validate after their last epoch / iteration
    train_s = time.time() - start
    hub = runner.message_hub
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    model.dataset_meta = runner.train_dataloader.dataset.metainfo
    metrics = {k: float(hub.get_scalar(f'val/{k}').current()) for k in spec['keys']}
    path = osp.join(args.out_dir, spec['name'] + '.pth')
    sha256 = save_weights(model, cfg, metrics, path)
    return dict(config=spec['config'], checkpoint=osp.relpath(osp.abspath(path), ROOT), sha256=sha256,
                backbone_init=cfg.model.backbone.get('init_cfg'),
                size_bytes=osp.getsize(path),
                params=sum(p.numel() for p in model.parameters()),
                backbone_params=sum(p.numel() for p in model.backbone.parameters()),
                train_time_s=round(train_s, 1), metrics=metrics,
                command=' '.join(['python', osp.relpath(osp.abspath(sys.argv[0]), ROOT)] +
                                 sys.argv[1:]),
                torch_threads=torch.get_num_threads())


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', choices=sorted(MODELS), default=['det', 'seg'])
    parser.add_argument('--data-root', default='data/digit_scenes')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--seed', type=int, default=0, help='data seed')
    parser.add_argument('--work-dir', default='work_dirs/fp_models')
    parser.add_argument('--out-dir', default='checkpoints')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads; 1 keeps runs reproducible across machines '
                        'and is fastest on a shared CPU')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides applied to every trained config')
    add_device_argument(parser)
    args = parser.parse_args()
    args.device = device_or_exit(args.device)
    return args


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    data_meta = ensure_data(args.data_root, args.num_train, args.num_val, args.seed)  # 1.
    results = {}
    for kind in [k for k in MODELS if k in args.models]:  # 2.-4., the detector first
        results[MODELS[kind]['name']] = train_one(kind, args)
    metrics_path = osp.join(args.out_dir, 'fp_metrics.json')
    report = {}
    if osp.isfile(metrics_path):  # keep the entries of models not retrained now
        with open(metrics_path) as f:
            report = json.load(f)
    report.setdefault('models', {}).update(results)
    report['data'] = {k: data_meta[k] for k in ('seed', 'size', 'num_train', 'num_val')}
    report['environment'] = dict(
        python=platform.python_version(), torch=str(torch.__version__),
        mmengine=__import__('mmengine').__version__, mmdet=__import__('mmdet').__version__,
        mmseg=__import__('mmseg').__version__, device=str(args.device))
    with open(metrics_path, 'w') as f:
        json.dump(report, f, indent=2)
    print(json.dumps(results, indent=2))
    return results


if __name__ == '__main__':
    main()
