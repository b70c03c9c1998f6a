"""Config handling shared by ``tools/*.py``: CLI overrides and multi-process runs on CPU.

MMEngine 0.10.7 assumes CUDA for multi-process runs in three places; this module makes
``torchrun ... --launcher pytorch`` work on CPU-only machines (gloo backend):

1. ``env_cfg.dist_cfg.backend`` defaults to ``'nccl'`` in every OpenMMLab config:
   without CUDA it is switched to ``'gloo'``;
2. ``mmengine.dist.init_dist`` calls ``torch.cuda.set_device(local_rank)`` before
   ``init_process_group``, which raises without an NVIDIA driver: the process group is
   initialised here, so the Runner finds it ready and skips ``init_dist``;
3. ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to DistributedDataParallel,
   which refuses them for CPU modules: ``model_wrapper_cfg.device_ids`` is set to None.

``--device cpu`` takes the same path on a machine with CUDA, and a node running more
ranks than it has GPUs shares them round-robin (:func:`setup_launcher`).

``env_cfg.dist_cfg.timeout`` (seconds; MMEngine's and torch's default: 1800) bounds how
long a rank waits in a collective for a peer that hangs; a peer that *dies* is noticed by
``torchrun``, which stops the other ranks within seconds (docs/reliability.md).
:func:`check_checkpoints` rejects a missing or truncated checkpoint before anything is
built.
"""
import datetime
import os
import os.path as osp

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log

from .checkpoint_file import check_checkpoint_file
from .device import local_world_size


def load_config(path, cfg_options=None, work_dir=None, launcher='none'):
    """Read a config and apply the usual OpenMMLab CLI overrides.

    Args:
        path (str): Config file.
        cfg_options (dict, optional): ``--cfg-options`` key-value pairs. Defaults to None.
        work_dir (str, optional): ``--work-dir``; else the config's ``work_dir``, else
            ``./work_dirs/<config name>``. Defaults to None.
        launcher (str): ``none``, ``pytorch``, ``slurm`` or ``mpi``. Defaults to 'none'.

    Returns:
        Config: The config, ready for ``Runner.from_cfg``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path!r} does not exist; pass the path of '
                                'a config, e.g. configs/mmdet/maskaq_*.py')
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def check_checkpoints(cfg):
    """Check the checkpoint files a run will read, before anything is built.

    ``model.teacher_checkpoint``, and the checkpoint ``resume`` / ``load_from`` picks (for
    ``--resume`` without a value: the latest one in the work dir). A missing file raises
    ``FileNotFoundError``, a truncated or corrupt one
    :class:`~maskaq_plugin.utils.CheckpointFileError`; both name the path and the fix.
    """
    model = cfg.get('model') or {}
    teacher = model.get('teacher_checkpoint') if isinstance(model, dict) else None
    if teacher:
        check_checkpoint_file(teacher, 'teacher_checkpoint (model.teacher_checkpoint)')
    resumed = cfg.get('load_from')
    if cfg.get('resume') and resumed is None:
        from mmengine.runner import find_latest_checkpoint
        resumed = find_latest_checkpoint(cfg.work_dir)
    if resumed and cfg.get('resume'):
        older = osp.join(cfg.work_dir, 'epoch_<N>.pth')
        pointer = osp.join(cfg.work_dir, 'last_checkpoint')
        check_checkpoint_file(resumed, 'the checkpoint to resume from', fix=(
            f'Resume from an older one (--resume {older}), or delete {pointer} to start '
            'over.'))
    elif resumed:
        check_checkpoint_file(resumed, 'load_from')


def _timeout_seconds(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f'env_cfg.dist_cfg.timeout must be a positive number of seconds, '
                         f'got {value!r}; e.g. --cfg-options env_cfg.dist_cfg.timeout=300')
    return datetime.timedelta(seconds=value)


def setup_launcher(cfg, device=None):
    """Prepare ``cfg`` (and the process group) for a multi-process run.

    Args:
        cfg (Config): From :func:`load_config`.
        device (torch.device | str, optional): The run's ``--device``; None: CUDA when
            available. Defaults to None.

    On the CPU (no CUDA, or ``--device cpu``): gloo, no ``device_ids``, the process group
    initialised here. On CUDA MMEngine's own path (one GPU per rank, ``LOCAL_RANK``),
    except when a node runs more ranks than it has GPUs: the ranks then share the GPUs
    round-robin, initialised here (NCCL refuses two ranks on one GPU, so set
    ``env_cfg.dist_cfg.backend=gloo`` for that). Nothing to do for ``launcher='none'``.
    """
    if cfg.launcher == 'none':
        return cfg
    on_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == 'cuda'
    if on_cuda:
        return _share_gpus(cfg) if local_world_size() > torch.cuda.device_count() else cfg
    if cfg.launcher != 'pytorch':
        raise ValueError(
            f'--launcher {cfg.launcher} needs CUDA (MMEngine calls torch.cuda.set_device); '
            'on CPU start the processes with torchrun and pass --launcher pytorch, e.g. '
            'tools/dist_train.sh CONFIG 2')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') != 'gloo':
        print_log(f'no CUDA device: dist backend {dist_cfg.get("backend", "nccl")!r} -> '
                  "'gloo'", logger='current')
        dist_cfg['backend'] = 'gloo'
    _wrapper(cfg)['device_ids'] = None
    _init_process_group(dist_cfg)
    return cfg


def _wrapper(cfg):
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    return cfg.model_wrapper_cfg  # Config stores a copy


def _share_gpus(cfg):
    """More ranks than GPUs on this node: rank ``r`` on GPU ``LOCAL_RANK % count``."""
    if cfg.launcher != 'pytorch':
        raise ValueError(f'--launcher {cfg.launcher}: {local_world_size()} processes on '
                         f'{torch.cuda.device_count()} GPU(s); start one process per GPU')
    gpu = int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()
    torch.cuda.set_device(gpu)
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    dist_cfg.setdefault('backend', 'nccl')
    _wrapper(cfg)['device_ids'] = [gpu]
    _init_process_group(dist_cfg)
    return cfg


def _init_process_group(dist_cfg):
    if torch_dist.is_initialized():
        return
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch but {missing} are not set: start the '
                           'processes with torchrun (tools/dist_train.sh CONFIG N)')
    kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
    if 'timeout' in kwargs:  # seconds in configs, as in mmengine.dist.init_dist
        kwargs['timeout'] = _timeout_seconds(kwargs['timeout'])
    torch_dist.init_process_group(backend=dist_cfg.get('backend', 'nccl'), **kwargs)
