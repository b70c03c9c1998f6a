"""Shared pieces of the benchmarks: tiny models, interleaved timing, machine, doc sections."""
import os
import os.path as osp
import platform
import statistics
import time
from typing import Callable, Dict, List

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DOC = osp.join(ROOT, 'docs', 'benchmarks.md')
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, as timm's DeiT/Swin


def tiny_deit(img_size: int = 64, num_classes: int = 100, explicit: bool = True, seed: int = 0,
              **overrides):
    """timm DeiT-like ViT (class token): patch 8, dim 96, depth 4, 3 heads; random init."""
    from timm.models.vision_transformer import VisionTransformer

    from maskaq_plugin.attention import make_attention_explicit
    torch.manual_seed(seed)
    cfg = dict(img_size=img_size, patch_size=8, embed_dim=96, depth=4, num_heads=3,
               num_classes=num_classes)
    model = VisionTransformer(**{**cfg, **overrides}).eval()
    if explicit:
        make_attention_explicit(model)
    return model


def tiny_swin(img_size: int = 64, num_classes: int = 100, explicit: bool = True, seed: int = 0,
              window_size: int = 4):
    """timm Swin: patch 4, dim 48, depths (2, 2, 2), heads (3, 6, 12); random init."""
    from timm.models.swin_transformer import SwinTransformer

    from maskaq_plugin.attention import make_attention_explicit
    torch.manual_seed(seed)
    model = SwinTransformer(img_size=img_size, patch_size=4, window_size=window_size,
                            embed_dim=48, depths=(2, 2, 2), num_heads=(3, 6, 12),
                            num_classes=num_classes).eval()
    if explicit:
        make_attention_explicit(model)
    return model


def vit_224(embed_dim: int = 192, num_heads: int = 3, seed: int = 0):
    """timm ViT at 224 px, patch 16, depth 12, 1000 classes, random init, explicit attention.

    The defaults are ``deit_tiny_patch16_224``'s architecture; ``(384, 6)`` is DeiT-S's.
    """
    from timm.models.vision_transformer import VisionTransformer

    from maskaq_plugin.attention import make_attention_explicit
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=224, patch_size=16, embed_dim=embed_dim, depth=12,
                              num_heads=num_heads).eval()
    make_attention_explicit(model)
    return model


def swin_t_224(seed: int = 0):
    """timm Swin-T at 224 px (patch 4, window 7, dim 96, depths 2-2-6-2, heads 3-6-12-24),
    1000 classes, random init, explicit attention."""
    from timm.models.swin_transformer import SwinTransformer

    from maskaq_plugin.attention import make_attention_explicit
    torch.manual_seed(seed)
    model = SwinTransformer(img_size=224, patch_size=4, window_size=7, embed_dim=96,
                            depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)).eval()
    make_attention_explicit(model)
    return model


def synchronize() -> None:
    """Wait for queued CUDA work (a no-op on the CPU), so wall times cover the kernels."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def interleaved(variants: Dict[str, Callable[[], object]], repeats: int,
                warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter) -> Dict[str, List[float]]:
    """Time (s) of each variant, ``repeats`` rounds; the order rotates every round.

    Run side by side on a shared machine, the variants see the same background load
    within a round, so per-round ratios and medians are comparable. CUDA work is
    synchronised before and after each call. ``clock`` is wall time by default;
    ``time.process_time`` (CPU time of this process) leaves out the time other jobs
    take from a single-threaded CPU run.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            synchronize()
            start = clock()
            variants[name]()
            synchronize()
            times[name].append(clock() - start)
    return times


def paired_ratio(times: Dict[str, List[float]], slow: str, fast: str) -> float:
    """Median over rounds of ``time[slow] / time[fast]``."""
    return statistics.median(a / b for a, b in zip(times[slow], times[fast]))


def machine() -> dict:
    """CPU, cores, threads, GPU (when CUDA is available) and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return dict(cpu=cpu, cores=os.cpu_count(), torch=torch.__version__,
                torch_threads=torch.get_num_threads(), gpu=gpu)


def load() -> float:
    """1-minute load average."""
    return os.getloadavg()[0]


def fmt_load(before: float, after: float) -> str:
    return f'load average {before:.1f} before, {after:.1f} after'


def write_section(title: str, body: str, doc: str = DOC) -> None:
    """Replace the section ``## title`` of ``doc`` (up to the next ``## ``) or append it."""
    heading = f'## {title}'
    text = f'{heading}\n\n{body.strip()}\n'
    content = open(doc).read() if osp.isfile(doc) else '# Benchmarks\n'
    start = content.find(heading + '\n')
    if start < 0:
        content = content.rstrip('\n') + '\n\n' + text
    else:
        end = content.find('\n## ', start + len(heading))
        content = content[:start] + text + (content[end:] if end >= 0 else '')
    with open(doc, 'w') as f:
        f.write(content.rstrip('\n') + '\n')


def table(header: List[str], rows: List[List[object]]) -> str:
    """A markdown table."""
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


class RunCache:
    """Finished runs of a benchmark, one JSON file per run, so an interrupted call loses
    only the run in progress and a later call with the same arguments picks up the rest.

    A run's file name is a hash of its arguments (``key``, any JSON-able dict) and of the
    source of ``maskaq_plugin/`` and ``benchmarks/`` as it was when the cache was opened:
    a change to the code runs everything again (this also leaves earlier results on disk
    under their old names; delete ``root`` to drop them).
    """

    def __init__(self, root: str, enabled: bool = True):
        import hashlib
        self.root, self.enabled = root, enabled
        digest = hashlib.sha256()
        for top in ('maskaq_plugin', 'benchmarks'):
            for dirpath, dirnames, files in sorted(os.walk(osp.join(ROOT, top))):
                dirnames.sort()
                for name in sorted(files):
                    if name.endswith('.py'):
                        path = osp.join(dirpath, name)
                        digest.update(osp.relpath(path, ROOT).encode())
                        with open(path, 'rb') as f:
                            digest.update(f.read())
        self.code = digest.hexdigest()[:16]

    def path(self, key: dict) -> str:
        import hashlib
        import json
        text = json.dumps(dict(key, code=self.code), sort_keys=True, default=str)
        return osp.join(self.root, hashlib.sha256(text.encode()).hexdigest()[:24] + '.json')

    def get(self, key: dict):
        """The stored result of ``key``, or None."""
        import json
        path = self.path(key)
        if not self.enabled or not osp.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)['result']

    def put(self, key: dict, result):
        """Store ``result`` (JSON-able) atomically; return it."""
        import json
        if self.enabled:
            os.makedirs(self.root, exist_ok=True)
            path = self.path(key)
            with open(path + '.tmp', 'w') as f:
                json.dump(dict(key=key, code=self.code, result=result), f, default=str)
            os.replace(path + '.tmp', path)
        return result

    def run(self, key: dict, fn: Callable[[], object]):
        """``fn()``'s result for ``key``: stored, or computed now and stored."""
        hit = self.get(key)
        return hit if hit is not None else self.put(key, fn())
