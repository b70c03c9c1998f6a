"""The shards of a synthesis round: which ones a rank makes, their seeds and targets,
and which ones it already finished (kept across a kill).

A round of ``num_samples`` images is split over ranks and into shards of one synthesis
batch each (:func:`shard_jobs`); shard ``index`` of rank ``r`` in round ``k`` is seeded
with ``(seed, k, r * SHARD_STRIDE + index)`` (:func:`shard_seed`).

:class:`~maskaq_plugin.synthesis.SampleBank` trusts a round only once its manifest is
written, after the last shard. :class:`RoundProgress` adds, next to the shards, a small
file per rank (``round_<k>/progress_r<rank>.json``, rewritten atomically after each
shard) listing the shards done so far with their sha256, and a *key*: a hash of
everything a shard depends on (teacher and student state, quantizer ranges included,
the round, seed, world size, sample counts and synthesis options). A rerun computing the
same key reuses the listed shards whose sha256 still matches and synthesises the rest;
any other key, file or temporary file of the rank is deleted. The key is also stored in
the round's manifest, so a round completed by a run killed before its first checkpoint
is reused the same way. So a SIGKILL in the middle
of a round costs the shard in flight on each rank, provided the student is bit-identical
on the rerun: always for round 0 with a fixed seed (bootstrap and calibration are
deterministic), rarely for a later round, whose epoch is trained again from the last
checkpoint (then the whole round is regenerated).
"""
import hashlib
import json
import os
import os.path as osp
import re
from typing import Iterable, List, Optional, Tuple

import torch

from ..utils.seeding import derive_seed
from .bank import MANIFEST, SampleBank, atomic_write_bytes

SHARD_STRIDE = 100003  # > shards per rank: (k, rank, index) -> distinct tags
Job = Tuple[int, int, int]  # (rank that owns the shard, shard index, images)
# shard_r<rank>_<i>.pt, progress_r<rank>.json and their temporary files (.<name>.*.tmp)
_RANK_FILE = re.compile(r'^\.?(?:shard|progress)_r(\d+)[_.]')
_MANIFEST_FILE = re.compile(r'^\.?' + re.escape(MANIFEST))


def shard_seed(seed: int, k: int, rank: int, index: int) -> int:
    """Seed of shard ``index`` of ``rank`` in round ``k``.

    Examples:
        >>> shard_seed(5, 2, 1, 3) == derive_seed(5, 2, 100006)
        True
    """
    return derive_seed(seed, k, rank * SHARD_STRIDE + index)


def shard_jobs(num_samples: int, batch_size: int, rank: int, world: int) -> List[Job]:
    """This rank's shards of a round: ``num_samples`` split over ``world`` ranks (the
    first ``num_samples % world`` ranks take one more), then into batches.

    Examples:
        >>> shard_jobs(5, 2, rank=0, world=2), shard_jobs(5, 2, rank=1, world=2)
        ([(0, 0, 2), (0, 1, 1)], [(1, 0, 2)])
    """
    count = num_samples // world + int(rank < num_samples % world)
    return [(rank, i, min(batch_size, count - i * batch_size))
            for i in range((count + batch_size - 1) // batch_size)]


def state_key(model: torch.nn.Module, **settings) -> str:
    """sha256 of ``model.state_dict()`` (names, dtypes, shapes, bytes) and ``settings``.

    Examples:
        >>> lin = torch.nn.Linear(2, 2)
        >>> state_key(lin, seed=0) == state_key(lin, seed=0) != state_key(lin, seed=1)
        True
    """
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f'{t.dtype}{tuple(t.shape)}'.encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


class RoundProgress:
    """The shards one rank finished in round ``k``, kept across a kill.

    Args:
        bank (SampleBank): The bank being written.
        k (int): Round.
        rank (int): This rank.
        key (str): :func:`state_key` of the model and settings the shards come from.
    """

    def __init__(self, bank: SampleBank, k: int, rank: int, key: str):
        self.bank, self.k, self.rank, self.key = bank, int(k), int(rank), key
        self.path = osp.join(bank.round_dir(k), f'progress_r{self.rank}.json')
        self.records: List[dict] = []
        self._candidates: Optional[List[dict]] = None

    @staticmethod
    def _read(path: str, key_name: str, key: str) -> List[dict]:
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            return []
        if not isinstance(saved, dict) or saved.get(key_name) != key:
            return []
        return [r for r in saved.get('shards', []) if isinstance(r, dict)]

    def collect(self) -> None:
        """Read the candidates: this rank's progress file, and the shards of a complete
        round ``k`` written from the same state (killed before its first checkpoint).

        Call on every rank, then barrier, then :meth:`resume` (which may delete the
        manifest on the main rank).
        """
        found = self._read(self.path, 'key', self.key) + [
            r for r in self._read(self.bank.manifest_path(self.k), 'state_key', self.key)
            if r.get('rank') == self.rank]
        self._candidates = list({r.get('file'): r for r in found}.values())

    def resume(self, jobs: Iterable[Tuple[int, int, int]], world: int,
               main: bool) -> List[dict]:
        """Records of this rank's finished shards to reuse; delete everything else.

        Deletes this rank's other shard, progress and temporary files (on the main rank
        also the round's manifest and the files of ranks ``>= world``), so that nothing
        unlisted is ever read. Call on every rank (after :meth:`collect` and a barrier
        when several ranks run), then barrier.

        Args:
            jobs: ``(rank, index, num_images)`` of the shards this rank must produce.
            world (int): World size.
            main (bool): Whether this is the main rank.
        """
        if self._candidates is None:
            self.collect()
        wanted = set(jobs)
        keep = [r for r in self._candidates
                if (r.get('rank'), r.get('index'), r.get('num_images')) in wanted
                and isinstance(r.get('file'), str) and r['file'] == osp.basename(r['file'])
                and self.bank.shard_ok(self.k, r)]
        kept = {r['file'] for r in keep}
        kept.add(osp.basename(self.path))
        directory = self.bank.round_dir(self.k)
        names = os.listdir(directory) if osp.isdir(directory) else []
        for name in names:
            m = _RANK_FILE.match(name)
            owner = int(m.group(1)) if m else None
            mine = owner == self.rank and name not in kept
            orphan = main and ((owner is not None and owner >= world)
                               or _MANIFEST_FILE.match(name) is not None)
            if mine or orphan:
                try:
                    os.unlink(osp.join(directory, name))
                except FileNotFoundError:
                    pass
        self.records = list(keep)
        if not keep and osp.exists(self.path):
            os.unlink(self.path)
        return keep

    def add(self, record: dict) -> None:
        """Record a finished shard (atomic rewrite of the progress file)."""
        self.records.append(dict(record))
        text = json.dumps(dict(key=self.key, round=self.k, rank=self.rank,
                               shards=self.records), indent=1, sort_keys=True)
        atomic_write_bytes(self.path, text.encode())

    def finish(self) -> None:
        """Delete the progress file once the round's manifest is written."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
