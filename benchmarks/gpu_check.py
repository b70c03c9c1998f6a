"""GPU figures of issue #12 in one prepared run (``tools/gpu_check.sh``; <= 8 min on one GPU).

Parts, each in its own process with its own timeout, so that a hang, an out-of-memory
or a CUDA error in one is recorded (status, seconds, error tail) and the next still runs:

1. ``synthesis``: Stage 1 speed of our ``Synthesizer`` vs the authors' loop
   (``benchmarks/paper_loop.py``, via :func:`benchmarks.synthesis_speed.run`) on timm
   DeiT-S and Swin-T at 224 px (random init, nothing downloaded);
2. ``qat``: one QAT step of the W8A8 / W4A4 students vs FP on the same two models
   (:func:`benchmarks.qat_cost.run`): ms per step and peak step memory;
3. ``memory``: peak memory of one synthesis iteration and of one QAT step (loss +
   backward) of the full-size Mask R-CNN Swin-T and UperNet Swin-T MaskAQ configs
   (``configs/mmdet``, ``configs/mmseg``; random-init teacher built from the config);
4. ``dist``: two processes (``tools/dist_train.sh``) training the tiny digit-scene
   detector config for one epoch: NCCL first; on a single GPU NCCL refuses two ranks on
   one device, so the run is repeated with gloo (both ranks sharing the GPU).

``--smoke`` shrinks everything (tiny models at 32 px, the digit-scene configs at batch 1,
one iteration) for a CPU test; there ``dist`` uses gloo on the CPU. Writes
``OUT/gpu_check.json`` and ``OUT/gpu_check.md``. Example::

    python -m benchmarks.gpu_check --device cuda --out work_dirs/gpu_check
    python -m benchmarks.gpu_check --device cpu --smoke --out /tmp/gpu_check_smoke
"""
import argparse
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PARTS = ('synthesis', 'qat', 'memory', 'dist')
TIMEOUTS = dict(synthesis=150, qat=90, memory=120, dist=120)  # s; sum 480 s, 8 min
DENSE = dict(  # task -> (full-size config, smoke config)
    det=('configs/mmdet/maskaq_mask-rcnn_swin-t-p4-w7_fpn_1x_coco_w4a4.py',
         'configs/mmdet/maskaq_maskrcnn_swin-tiny_digits_w4a4.py'),
    seg=('configs/mmseg/maskaq_swin-tiny-patch4-window7_upernet_ade20k-512x512_w4a4.py',
         'configs/mmseg/maskaq_upernet_swin-tiny_digits_w4a4.py'))
DIST_CONFIG = 'configs/mmdet/maskaq_maskrcnn_swin-tiny_digits_w4a8.py'


def vit_models(smoke: bool) -> dict:
    """label -> builder: DeiT-S and Swin-T at 224 (tiny ones at 32 px with ``smoke``)."""
    from .common import swin_t_224, tiny_deit, tiny_swin, vit_224

    if smoke:
        return {'tiny DeiT (32 px)': lambda: tiny_deit(32, num_classes=10),
                'tiny Swin (32 px)': lambda: tiny_swin(32, num_classes=10)}
    return {
        'DeiT-S (224 px, patch 16, dim 384, depth 12, 6 heads)': lambda: vit_224(384, 6),
        'Swin-T (224 px, patch 4, window 7, dim 96, depths 2-2-6-2)': swin_t_224,
    }


def part_synthesis(device, smoke):
    from . import synthesis_speed
    budget = dict(batch=2, iters=2, repeats=1) if smoke else dict(batch=8, iters=10, repeats=3)
    res = synthesis_speed.run(device=device, models=vit_models(smoke), **budget)
    return dict(budget=budget, models={m['model']: dict(
        median_s=m['median_s'], images_per_s=m['images_per_s'],
        paper_over_ours=m['ratio']['paper'],
        paper_frozen_over_ours=m['ratio']['paper_frozen']) for m in res['models']})


def part_qat(device, smoke):
    from . import qat_cost
    budget = dict(batch=2, repeats=1) if smoke else dict(batch=16, repeats=5)
    # the CPU memory timeline (torch.profiler) takes minutes: memory on CUDA only
    res = qat_cost.run(device=device, models=vit_models(smoke),
                       memory=device.type == 'cuda', **budget)
    return dict(budget=budget, models={m['model']: dict(
        ms_per_step={k: v * 1e3 for k, v in m['median_s'].items()},
        over_fp=m['ratio'], peak_step_mib=m['peak_mib']) for m in res['models']})


def _peak_mib(device, fn):
    """Peak memory (MiB) of ``fn()``: CUDA allocator peak above the start, or, on the
    CPU, the process's peak resident set (``ru_maxrss``, which includes everything)."""
    if device.type == 'cuda':
        from .qat_cost import peak_step_memory
        return peak_step_memory(fn, device)
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def part_memory(device, smoke):
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    import maskaq_plugin  # noqa: F401  (registers MaskAQAlgorithm)
    results = {}
    for task, (full, tiny) in DENSE.items():
        path = tiny if smoke else full
        cfg = Config.fromfile(osp.join(ROOT, path))
        cfg.model.teacher_checkpoint, cfg.model.allow_random_teacher = None, True
        hook = next(h for h in cfg.custom_hooks if h.type == 'SampleRefreshHook')
        syn_batch = 1 if smoke else hook.get('batch_size', 16)
        qat_batch = 1 if smoke else cfg.train_dataloader.batch_size
        torch.manual_seed(0)
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            algo = MODELS.build(cfg.model).to(device)
        synthesizer = algo.build_synthesizer(with_student=True, iters=1, progress=False)
        syn = _peak_mib(device, lambda: synthesizer.synthesize(syn_batch, syn_batch, seed=0))
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(qat_batch, *algo.input_size, generator=gen).to(device)
        samples = algo.synthesis_prior().sample(qat_batch, gen)

        def qat_step():
            losses = algo.loss(x, samples)
            sum(v for k, v in losses.items() if 'loss' in k).backward()

        qat = _peak_mib(device, qat_step)
        results[task] = dict(config=path, input_size=list(algo.input_size),
                             synthesis_batch=syn_batch, qat_batch=qat_batch,
                             synthesis_iter_peak_mib=syn, qat_step_peak_mib=qat)
        del algo, synthesizer
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    measure = ('torch.cuda.max_memory_allocated above the start' if device.type == 'cuda'
               else 'process peak RSS (ru_maxrss), cumulative')
    return dict(measure=measure, configs=results)


def part_dist(device, smoke, out, timeout):
    """Two ranks of tools/train.py, one epoch of the tiny detector config."""
    opts = ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'param_scheduler.0.T_max=1',
            'param_scheduler.0.end=1', 'train_dataloader.batch_size=1',
            'train_dataloader.dataset.num_samples=2', 'custom_hooks.0.batch_size=1',
            'custom_hooks.0.synthesis.iters=1', 'custom_hooks.0.bootstrap_iters=1',
            'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
            'default_hooks.logger.interval=1', 'custom_hooks.1.formats=[onnx]',
            'custom_hooks.1.full_model=False']
    backends = ['gloo'] if device.type == 'cpu' else ['nccl', 'gloo']
    runs, started = {}, time.time()
    for i, backend in enumerate(backends):
        left = timeout - (time.time() - started) - 5
        if left < 20:
            runs[backend] = dict(status='skipped', error='no time left in the part')
            continue
        work = osp.join(out, f'dist_{backend}')
        env = dict(os.environ, PYTHON=sys.executable, PORT=str(29561 + i), OMP_NUM_THREADS='1')
        cmd = ['bash', 'tools/dist_train.sh', DIST_CONFIG, '2', '--work-dir', work,
               '--device', device.type, '--cfg-options', *opts,
               f'env_cfg.dist_cfg.backend={backend}']
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=left,
                                  start_new_session=True)
            log, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as e:
            log, rc = (e.output or b'').decode() if isinstance(e.output, bytes) \
                else (e.output or ''), 'timeout'
        manifest = osp.join(work, 'sample_bank', 'round_0', 'manifest.json')
        ranks = sorted({s['rank'] for s in json.load(open(manifest))['shards']}) \
            if osp.isfile(manifest) else []
        with open(osp.join(out, f'dist_{backend}.log'), 'w') as f:
            f.write(log)
        errors = [line for line in log.splitlines() if 'Error' in line][-5:]
        runs[backend] = dict(status='ok' if rc == 0 and ranks == [0, 1] else 'failed',
                             rc=rc, seconds=round(time.time() - t0, 1), shard_ranks=ranks,
                             errors=errors, log=osp.join(out, f'dist_{backend}.log'))
        if rc == 0 and ranks == [0, 1]:
            break
    return dict(config=DIST_CONFIG, gpus=torch.cuda.device_count(), runs=runs,
                seconds=round(time.time() - started, 1))


def run_part(name, args):
    """Run one part in a child process; return its record (never raises)."""
    path = osp.join(args.out, f'part_{name}.json')
    if osp.exists(path):
        os.remove(path)
    cmd = [sys.executable, '-m', 'benchmarks.gpu_check', '--part', name, '--device',
           args.device, '--out', args.out, '--timeout', str(args.timeouts[name])]
    cmd += ['--smoke'] if args.smoke else []
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=args.timeouts[name] + 30)
        rc, log = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as e:
        rc, log = 'timeout', e.output.decode() if isinstance(e.output, bytes) else (e.output or '')
    record = dict(status='ok' if rc == 0 and osp.isfile(path) else 'failed', rc=rc,
                  seconds=round(time.time() - t0, 1))
    if osp.isfile(path):  # also a failed part's partial figures (dist: each backend)
        with open(path) as f:
            record['result'] = json.load(f)
    if record['status'] != 'ok':
        record['error'] = (log or '')[-3000:]
    print(f'[gpu_check] {name}: {record["status"]} in {record["seconds"]} s', flush=True)
    return record


def markdown(report) -> str:
    lines = [f'GPU check: {report["machine"]}, device `{report["device"]}`'
             f'{" (smoke sizes)" if report["smoke"] else ""}; command: '
             f'`{report["command"]}`', '']
    for name, rec in report['parts'].items():
        lines.append(f'### {name}: {rec["status"]} ({rec["seconds"]} s)')
        lines += ['', '```json', json.dumps(rec.get('result', rec.get('error')), indent=1,
                                            default=str)[:6000], '```', '']
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default=None, help='cuda (default when available) or cpu')
    parser.add_argument('--smoke', action='store_true', help='tiny sizes (a CPU test)')
    parser.add_argument('--out', default=osp.join(ROOT, 'work_dirs', 'gpu_check'))
    parser.add_argument('--parts', nargs='+', default=list(PARTS), choices=PARTS)
    parser.add_argument('--part', choices=PARTS, help=argparse.SUPPRESS)  # child process
    parser.add_argument('--timeout', type=float, help=argparse.SUPPRESS)
    parser.add_argument('--timeouts', nargs='+', default=[], metavar='PART=S',
                        help=f'per-part limits in seconds (default {TIMEOUTS})')
    args = parser.parse_args(argv)
    args.timeouts = dict(TIMEOUTS, **{k: float(v) for k, v in
                                      (t.split('=', 1) for t in args.timeouts)})
    return args


def main(argv=None):
    from maskaq_plugin.utils import device_or_exit
    args = parse_args(argv)
    device = device_or_exit(args.device)
    args.device = str(device)
    os.makedirs(args.out, exist_ok=True)
    if args.part:  # child: one part, its result to OUT/part_NAME.json
        torch.set_num_threads(1 if device.type == 'cpu' else torch.get_num_threads())
        fn = dict(synthesis=part_synthesis, qat=part_qat, memory=part_memory)
        res = part_dist(device, args.smoke, args.out, args.timeout) if args.part == 'dist' \
            else fn[args.part](device, args.smoke)
        with open(osp.join(args.out, f'part_{args.part}.json'), 'w') as f:
            json.dump(res, f, indent=1, default=str)
        if args.part == 'dist' and not any(r['status'] == 'ok' for r in res['runs'].values()):
            raise SystemExit('dist: no backend finished the 2-process run')
        return res
    from .common import machine
    info = machine()
    report = dict(device=args.device, smoke=args.smoke, torch=torch.__version__,
                  cuda=torch.version.cuda,
                  machine=f'{info["gpu"] or info["cpu"]}, {info["cores"]} CPU cores',
                  command='python -m benchmarks.gpu_check ' + ' '.join(
                      sys.argv[1:] if argv is None else argv),
                  parts={name: run_part(name, args) for name in args.parts})
    with open(osp.join(args.out, 'gpu_check.json'), 'w') as f:
        json.dump(report, f, indent=1, default=str)
    with open(osp.join(args.out, 'gpu_check.md'), 'w') as f:
        f.write(markdown(report) + '\n')
    print(f'[gpu_check] wrote {args.out}/gpu_check.json and gpu_check.md')
    return report


if __name__ == '__main__':
    main()
