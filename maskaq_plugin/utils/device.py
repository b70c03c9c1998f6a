"""The ``--device`` of tools/ and benchmarks/: parse it, refuse an unavailable one, and
make MMEngine's Runner use it.

MMEngine 0.10.7 has no device setting: ``mmengine.device.get_device()`` returns a module
constant fixed when ``mmengine.device`` is imported (``'cuda'`` whenever
``torch.cuda.is_available()``), and ``Runner.wrap_model`` moves the model there
(``model.to(get_device())``; its comment suggests ``CUDA_VISIBLE_DEVICES=-1``, which only
works if set before the process starts). :func:`use_runner_device` pins that constant to
``'cpu'`` for ``--device cpu``, so the Runner, its checkpoint loading (``map_location``)
and everything that calls ``get_device()`` stay on the CPU on a machine with CUDA.
"""
import os

import torch


def default_device() -> str:
    """``'cuda'`` when ``torch.cuda.is_available()``, else ``'cpu'``."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def resolve_device(name=None) -> torch.device:
    """The ``torch.device`` of ``name`` (``cpu``, ``cuda``, ``cuda:N``; None: the default).

    Raises:
        ValueError: ``name`` is not a CPU or CUDA device, or that device is not available;
            the message names the value and the fix.
    """
    if name is None:
        name = default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f'--device {name!r} is not a device; pass cpu, cuda or cuda:N') \
            from None
    if device.type == 'cpu':
        return torch.device('cpu')
    if device.type != 'cuda':
        raise ValueError(f'--device {name!r}: only cpu and cuda are supported; pass cpu, '
                         'cuda or cuda:N')
    if not torch.cuda.is_available():
        raise ValueError(f'--device {name!r}: CUDA is not available on this machine (torch '
                         f'{torch.__version__}, CUDA build: {torch.version.cuda or "none"}); '
                         'pass --device cpu, or install a CUDA build of torch on a machine '
                         'with an NVIDIA GPU')
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f'--device {name!r}: this machine has {count} CUDA device(s), '
                         f'cuda:0 to cuda:{count - 1}; pass one of them')
    return device


def add_device_argument(parser):
    """Add ``--device`` (default: :func:`default_device`) to an argparse parser."""
    parser.add_argument(
        '--device', default=None,
        help="cpu, cuda or cuda:N (default: 'cuda' when torch.cuda.is_available(), else "
        "'cpu'); an unavailable device is refused")
    return parser


def device_or_exit(name=None) -> torch.device:
    """:func:`resolve_device`, its error turned into ``SystemExit`` for a command line."""
    try:
        return resolve_device(name)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def use_runner_device(cfg, device: torch.device):
    """Make MMEngine's Runner (built from ``cfg`` afterwards) run on ``device``.

    * ``cpu``: pin ``mmengine.device.get_device()`` to ``'cpu'`` (see the module
      docstring) and, for multi-process runs, the gloo backend (NCCL needs CUDA tensors);
    * ``cuda:N`` (one process): make it the current CUDA device, where the Runner's
      ``model.to('cuda')`` puts the model; with a launcher each rank takes the GPU of its
      ``LOCAL_RANK`` as usual, so a device index is refused there.

    Returns:
        Config: ``cfg``.
    """
    import mmengine.device.utils as mmengine_device
    if device.type == 'cpu':
        mmengine_device.DEVICE = 'cpu'
        if cfg.get('launcher', 'none') != 'none':
            cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
        return cfg
    mmengine_device.DEVICE = 'cuda'
    if device.index is not None:
        if cfg.get('launcher', 'none') != 'none':
            raise SystemExit(f'--device {device}: with --launcher {cfg.launcher} each process '
                             'uses the GPU of its LOCAL_RANK; pass --device cuda (and '
                             'CUDA_VISIBLE_DEVICES to choose the GPUs)')
        torch.cuda.set_device(device)
    return cfg


def local_world_size() -> int:
    """Processes on this node (torchrun's ``LOCAL_WORLD_SIZE``; 1 without it)."""
    return int(os.environ.get('LOCAL_WORLD_SIZE', 1))
