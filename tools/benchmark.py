"""Speed and cost benchmarks of maskaq_plugin; each writes its section of docs/benchmarks.md.

Subcommands (``all`` runs the first three in turn; it is the default):

* ``synthesis``: Stage 1 images/s of our ``Synthesizer`` vs the plain paper loop
  (``benchmarks/paper_loop.py``) at equal work, with the loss terms of both;
* ``floor`` (not in ``all``): one ``Synthesizer`` iteration ÷ the floor, F and Q forward
  plus the backward to the images alone, on DeiT-T and Swin-T at 224 px
  (``benchmarks/synthesis_floor.py``; ``--models tiny`` for the 64-px models);
* ``qat``: time per QAT step and peak memory of the W8A8 / W4A4 student vs the FP model;
* ``deploy``: OpenVINO latency and IR size of the W8A8 backbone (INT8 on CPU) vs FP32,
  the precision each layer ran in, and the INT8 outputs vs the torch fake-quant model;
* ``accuracy`` (hours on a CPU; not in ``all``): box / mask AP and mIoU of the digit-scene
  detector and segmentor per method (noise, psaq, mimiq, maskaq, real data), bit-width
  and seed, plus MaskAQ's ablations; each run is a ``tools/train.py`` run, finished runs
  are reused (``benchmarks/accuracy_dense.py``).

Each writes a table, the exact command and the machine (cores, load) into its section of
docs/benchmarks.md ("Synthesis speed", "QAT cost", "Deployment"), a plot under docs/ and
the raw numbers under benchmarks/results/. Timings interleave the variants in one
process and take medians, for a shared, loaded machine. ``--device`` (default: cuda when
available) is where ``synthesis``, ``qat`` and ``accuracy`` run; ``deploy`` measures
OpenVINO's CPU runtime and ignores it. The GPU figures of issue #12 come from
``tools/gpu_check.sh`` instead.

Examples:
    python tools/benchmark.py synthesis --repeats 5
    python tools/benchmark.py synthesis --before HEAD~3:maskaq_plugin/synthesis/synthesizer.py
    python tools/benchmark.py qat
    python tools/benchmark.py deploy --repeats 300
    python tools/benchmark.py all --no-write          # print only
    python tools/benchmark.py synthesis --render      # rewrite the doc from the last run
    python tools/benchmark.py floor --batch 16 --floor-iters 2 --repeats 3
    python tools/benchmark.py accuracy --tasks det --bits w3a3 --seeds 0 1 2
    python tools/benchmark.py qat --device cpu
"""
import argparse
import importlib
import json
import os
import os.path as osp
import shlex
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # the benchmarks package lives beside tools/

from maskaq_plugin.utils import add_device_argument, device_or_exit  # noqa: E402

SECTIONS = dict(synthesis='Synthesis speed', qat='QAT cost', deploy='Deployment',
                accuracy='Accuracy: detection and segmentation (digit scenes)',
                floor='Synthesis floor ratio (issue #12 item 4)')
MODULES = dict(synthesis='synthesis_speed', qat='qat_cost', deploy='deploy',
               accuracy='accuracy_dense', floor='synthesis_floor')
PLOTS = dict(synthesis='benchmark_synthesis.png', qat='benchmark_qat.png',
             deploy='benchmark_deploy.png', accuracy='benchmark_accuracy.png')
ALL = ('synthesis', 'qat', 'deploy')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('what', nargs='?', default='all', choices=[*SECTIONS, 'all'])
    acc = parser.add_argument_group('accuracy')
    acc.add_argument('--tasks', nargs='+', default=['det', 'seg'], choices=['det', 'seg'])
    acc.add_argument('--variants', nargs='+', default=None,
                     help='methods and ablations (default: noise psaq mimiq maskaq real)')
    acc.add_argument('--bits', nargs='+', default=['w4a8', 'w4a4', 'w3a3'],
                     choices=['w4a8', 'w4a4', 'w3a3'])
    acc.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    acc.add_argument('--num-samples', type=int, default=16, help='images per round')
    acc.add_argument('--synthesis-iters', type=int, default=25)
    acc.add_argument('--epochs', type=int, default=8, help='QAT epochs')
    acc.add_argument('--refresh-every', type=int, default=4, help='MaskAQ refresh (epochs)')
    parser.add_argument('--repeats', type=int, default=None,
                        help='interleaved rounds (synthesis 5, qat 10, deploy 200)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch / OpenVINO threads (default 1: a shared 2-core box)')
    parser.add_argument('--batch', type=int, default=None,
                        help='batch size (synthesis 8, qat 16; deploy always 1)')
    parser.add_argument('--iters', type=int, default=20, help='synthesis iterations')
    floor = parser.add_argument_group('floor')
    floor.add_argument('--models', default='224', choices=['224', 'deit', 'swin', 'tiny'],
                       help='DeiT-T and Swin-T at 224 px (or one of them), or the tiny '
                       '64-px models')
    floor.add_argument('--floor-iters', type=int, default=2,
                       help='iterations per timed call (default 2)')
    parser.add_argument('--before', default='benchmarks/synthesizer_first.py',
                        help='synthesis: also time this synthesizer.py (path or REV:path; '
                        'default: our first version; "" to leave it out)')
    parser.add_argument('--render', action='store_true',
                        help='rewrite the sections from benchmarks/results/*.json, no run')
    parser.add_argument('--no-write', action='store_true',
                        help='print the sections instead of writing the doc')
    add_device_argument(parser)
    args = parser.parse_args(argv)
    args.device = device_or_exit(args.device)
    return args


def _run(what, args, command):
    import torch

    from benchmarks import common
    torch.set_num_threads(args.threads)
    module = importlib.import_module(f'benchmarks.{MODULES[what]}')
    kwargs = dict(repeats=args.repeats) if args.repeats else {}
    if args.batch and what != 'deploy':
        kwargs['batch'] = args.batch
    if what in ('synthesis', 'qat', 'floor'):
        kwargs['device'] = args.device
    if what == 'synthesis':
        kwargs.update(iters=args.iters, before=args.before)
    if what == 'floor':
        kwargs.update(models=args.models, iters=args.floor_iters)
    if what == 'deploy':
        kwargs['threads'] = args.threads
    if what == 'accuracy':
        kwargs = dict(tasks=args.tasks, bits=args.bits, seeds=args.seeds,
                      num_samples=args.num_samples, synthesis_iters=args.synthesis_iters,
                      epochs=args.epochs, refresh_every=args.refresh_every,
                      threads=args.threads, batch_size=args.batch or 8,
                      device=str(args.device))
        if args.variants:
            kwargs['variants'] = args.variants
    results = osp.join(ROOT, 'benchmarks', 'results', f'{what}.json')
    if args.render:
        with open(results) as f:
            res = json.load(f)
    else:
        load_before = common.load()
        res = module.run(**kwargs)
        load_after = common.load()
        info = common.machine()
        res['machine'] = (f'{info["cpu"]}, {info["cores"]} cores shared with other jobs '
                          f'({common.fmt_load(load_before, load_after)}), {args.threads} '
                          f'thread(s), torch {info["torch"]}')
        if args.device.type == 'cuda' and what != 'deploy':
            res['machine'] += f', on {info["gpu"]}'
        res['command'] = command
        os.makedirs(osp.dirname(results), exist_ok=True)
        with open(results, 'w') as f:
            json.dump(res, f, indent=1, default=str)
    body = module.markdown(res, res['command'], res['machine'])
    if args.no_write:
        print(f'## {SECTIONS[what]}\n\n{body}')
        return res
    if what in PLOTS:
        module.plot(res, osp.join(ROOT, 'docs', PLOTS[what]))
        body += f'\n![{SECTIONS[what]}]({PLOTS[what]})\n'
    common.write_section(SECTIONS[what], body)
    print(f'## {SECTIONS[what]}\n\n{body}')
    return res


def main(argv=None):
    args = parse_args(argv)
    command = 'python tools/benchmark.py ' + ' '.join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    for what in (ALL if args.what == 'all' else [args.what]):
        _run(what, args, command.rstrip())


if __name__ == '__main__':
    main()
