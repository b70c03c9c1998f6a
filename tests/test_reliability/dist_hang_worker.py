"""torchrun worker of test_rank_failure.py: rank 1 hangs, rank 0 waits in a barrier.

The process group is made by ``maskaq_plugin.utils.setup_launcher`` from
``env_cfg.dist_cfg.timeout`` (seconds, argv[1]), as ``tools/train.py --launcher pytorch``
does on CPU, so rank 0 must give up after that timeout instead of MMEngine's 30 minutes.
"""
import sys
import time

import torch.distributed as dist
from mmengine.config import Config

from maskaq_plugin.utils import setup_launcher

if __name__ == '__main__':
    cfg = Config(dict(launcher='pytorch',
                      env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=float(sys.argv[1])))))
    setup_launcher(cfg)
    if dist.get_rank() == 1:
        time.sleep(600)  # a hung rank (a deadlock, a stuck file system)
    start = time.time()
    try:
        dist.barrier()
    finally:
        print(f'rank 0 left the barrier after {time.time() - start:.1f} s', flush=True)
