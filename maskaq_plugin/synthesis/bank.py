"""The sample bank: synthetic images on disk, one directory per synthesis round.

Layout::

    <bank_dir>/round_<k>/shard_r<rank>_<i>.pt    # written by rank <rank>, one per batch
    <bank_dir>/round_<k>/manifest.json           # written last, by rank 0

A shard is a ``torch.save`` of plain types only (``images``: float ``(n, C, H, W)`` in
the model's normalised input space, ``targets``: the prior's targets as tensors / lists,
``meta``: ints, floats, strings), so it loads with ``weights_only=True``. Every file is
written atomically (temporary file in the same directory, fsync, ``os.replace``). The
manifest lists each shard with its sha256; readers trust only listed shards and check
the hash before the first read: a shard that does not match is treated as missing
(:meth:`SampleBank.verify_round` names it, the writer regenerates it) and never loaded.

A bank belongs to one model and input size: the manifest stores a *fingerprint*
(architecture, input size, normalisation), and opening it for another model raises
:class:`BankMismatchError` naming both.
"""
import hashlib
import io
import json
import os
import os.path as osp
import re
import shutil
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

MANIFEST = 'manifest.json'
FORMAT_VERSION = 1
_ROUND_RE = re.compile(r'^round_(\d+)$')


class BankMismatchError(RuntimeError):
    """The bank on disk was synthesised for another model or input size."""


def model_fingerprint(architecture: str, input_size: Sequence[int], mean: Sequence[float],
                      std: Sequence[float], bgr_to_rgb: bool, task: str) -> Dict[str, Any]:
    """Plain-typed identity of the model a bank belongs to.

    Args:
        architecture (str): e.g. ``'MaskRCNN/SwinTransformer'``.
        input_size (Sequence[int]): ``(C, H, W)`` of the synthetic images.
        mean, std (Sequence[float]): The data preprocessor's normalisation (0-255 scale).
        bgr_to_rgb (bool): Whether the preprocessor swaps BGR to RGB.
        task (str): ``'det'``, ``'seg'`` or ``'cls'``.
    """
    norm = json.dumps([[round(float(v), 6) for v in mean], [round(float(v), 6) for v in std],
                       bool(bgr_to_rgb)])
    return dict(architecture=str(architecture), input_size=[int(v) for v in input_size],
                task=str(task), norm_sha=hashlib.sha256(norm.encode()).hexdigest()[:12])


def fingerprint_str(fp: Dict[str, Any]) -> str:
    """Readable one-line form of a fingerprint."""
    size = 'x'.join(str(v) for v in fp.get('input_size', ()))
    return f"{fp.get('architecture')}@{size}[{fp.get('task')}, norm {fp.get('norm_sha')}]"


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same dir, fsync, replace."""
    directory = osp.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # persist the rename itself
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some filesystems do not allow fsync on directories
        pass


def shard_name(rank: int, index: int) -> str:
    return f'shard_r{rank}_{index}.pt'


class SampleBank:
    """Reader and writer of a sample bank directory.

    Writing a round is collective under ``torch.distributed``: every rank calls
    :meth:`write_shard` for its own shards, then :meth:`commit_round` (which gathers the
    shard records, lets rank 0 write the manifest and ends with a barrier). Without
    ``torch.distributed`` the same calls work on one process.

    Args:
        bank_dir (str): Directory of the bank (created on first write).
        fingerprint (dict, optional): From :func:`model_fingerprint`; when given,
            reading a round whose manifest has another fingerprint raises
            :class:`BankMismatchError`. Defaults to None (no check).

    Examples:
        >>> import tempfile, torch
        >>> bank = SampleBank(tempfile.mkdtemp())
        >>> rec = bank.write_shard(0, torch.zeros(2, 3, 8, 8), rank=0, index=0)
        >>> manifest = bank.commit_round(0, [rec], seed=0)
        >>> bank.latest_round(), bank.load_round(0)['images'].shape
        (0, torch.Size([2, 3, 8, 8]))
    """

    def __init__(self, bank_dir: str, fingerprint: Optional[Dict[str, Any]] = None):
        if not bank_dir:
            raise ValueError(f'bank_dir must be a directory path, got {bank_dir!r}')
        self.bank_dir = osp.abspath(bank_dir)
        self.fingerprint = fingerprint
        self._verified: Dict[tuple, bool] = {}  # file versions verified in this process

    # ---------------------------------------------------------------- paths
    def round_dir(self, k: int) -> str:
        return osp.join(self.bank_dir, f'round_{int(k)}')

    def manifest_path(self, k: int) -> str:
        return osp.join(self.round_dir(k), MANIFEST)

    def rounds(self) -> List[int]:
        """Rounds that have a manifest (complete), ascending."""
        if not osp.isdir(self.bank_dir):
            return []
        found = []
        for name in os.listdir(self.bank_dir):
            m = _ROUND_RE.match(name)
            if m and osp.isfile(osp.join(self.bank_dir, name, MANIFEST)):
                found.append(int(m.group(1)))
        return sorted(found)

    def latest_round(self) -> Optional[int]:
        """The newest complete round, or None when the bank has none."""
        rounds = self.rounds()
        return rounds[-1] if rounds else None

    # --------------------------------------------------------------- writing
    def clear_round(self, k: int) -> None:
        """Delete round ``k`` (complete or not). Call on one rank, then barrier."""
        shutil.rmtree(self.round_dir(k), ignore_errors=True)

    def write_shard(self, k: int, images: torch.Tensor, *, rank: int, index: int,
                    targets: Any = None, meta: Optional[dict] = None) -> Dict[str, Any]:
        """Write one shard of round ``k`` atomically; return its manifest record.

        Args:
            k (int): Round.
            images (Tensor): ``(n, C, H, W)`` float images in normalised space.
            rank (int): Writing rank (part of the file name).
            index (int): Shard index within the rank.
            targets: Plain-typed targets (tensors, lists, dicts, numbers), one per image.
            meta (dict, optional): Plain-typed extra information (e.g. the seed).
        """
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(f'images must be a float (n, C, H, W) tensor, got '
                             f'{images.dtype} {tuple(images.shape)}')
        os.makedirs(self.round_dir(k), exist_ok=True)
        payload = dict(images=images.detach().cpu().float().contiguous(), targets=targets,
                       meta=dict(meta or {}, round=int(k), rank=int(rank), index=int(index)))
        buf = io.BytesIO()
        torch.save(payload, buf)
        data = buf.getvalue()
        name = shard_name(rank, index)
        path = osp.join(self.round_dir(k), name)
        atomic_write_bytes(path, data)
        sha = hashlib.sha256(data).hexdigest()
        st = os.stat(path)
        self._verified[(path, sha, st.st_size, st.st_mtime_ns)] = True
        return dict(file=name, rank=int(rank), index=int(index), sha256=sha,
                    num_images=int(images.shape[0]), shape=list(images.shape[1:]))

    def commit_round(self, k: int, records: List[Dict[str, Any]], *, seed: int,
                     extra: Optional[dict] = None) -> Dict[str, Any]:
        """Collective: gather every rank's shard records; rank 0 writes the manifest.

        Ends with a barrier, so on return every rank can read the round.

        Args:
            k (int): Round.
            records (list[dict]): This rank's records from :meth:`write_shard`.
            seed (int): Base seed of the round (recorded).
            extra (dict, optional): Plain-typed manifest entries (normalisation, losses).

        Returns:
            dict: The manifest.
        """
        from mmengine.dist import all_gather_object, barrier, get_rank

        gathered = all_gather_object(list(records))
        shards = sorted((r for recs in gathered for r in recs),
                        key=lambda r: (r['rank'], r['index']))
        shapes = {tuple(r['shape']) for r in shards}
        if len(shapes) > 1:
            raise ValueError(f'round {k}: shards have different image shapes {shapes}')
        manifest = dict(format_version=FORMAT_VERSION, round=int(k), seed=int(seed),
                        fingerprint=self.fingerprint,
                        input_size=list(shards[0]['shape']) if shards else None,
                        num_images=sum(r['num_images'] for r in shards),
                        created=time.time(), shards=shards, **(extra or {}))
        if get_rank() == 0:
            text = json.dumps(manifest, indent=1, sort_keys=True)
            atomic_write_bytes(self.manifest_path(k), text.encode())
        barrier()
        return manifest

    def prune(self, keep_last: int = 1) -> List[int]:
        """Delete all but the newest ``keep_last`` complete rounds (and older partial ones).

        Call on one rank. Returns the deleted rounds.
        """
        if keep_last < 1:
            raise ValueError(f'keep_last must be >= 1, got {keep_last}')
        complete = self.rounds()
        if len(complete) <= keep_last:
            return []
        oldest_kept = complete[-keep_last]
        deleted = []
        for name in os.listdir(self.bank_dir):
            m = _ROUND_RE.match(name)
            if m and int(m.group(1)) < oldest_kept:
                shutil.rmtree(osp.join(self.bank_dir, name), ignore_errors=True)
                deleted.append(int(m.group(1)))
        return sorted(deleted)

    # --------------------------------------------------------------- reading
    def read_manifest(self, k: int) -> Dict[str, Any]:
        """The manifest of round ``k``, checked against this bank's fingerprint.

        Raises:
            FileNotFoundError: Round ``k`` has no manifest (absent or incomplete).
            BankMismatchError: The round was made for another model / input size.
        """
        path = self.manifest_path(k)
        if not osp.isfile(path):
            raise FileNotFoundError(f'sample bank round {k} has no manifest at {path} '
                                    f'(complete rounds: {self.rounds()})')
        with open(path) as f:
            manifest = json.load(f)
        theirs = manifest.get('fingerprint')
        if self.fingerprint is not None and theirs != self.fingerprint:
            raise BankMismatchError(
                f'the sample bank {self.bank_dir} (round {k}) was synthesised for '
                f'{fingerprint_str(theirs or {})}, but this model is '
                f'{fingerprint_str(self.fingerprint)}. Delete the bank or point bank_dir '
                'elsewhere (it is regenerated).')
        return manifest

    def manifest_sha(self, k: int) -> str:
        """sha256 of round ``k``'s manifest file (identity of a round's content)."""
        return sha256_file(self.manifest_path(k))

    def shard_ok(self, k: int, record: Dict[str, Any]) -> bool:
        """Whether the shard of ``record`` exists and matches its hash.

        Hashing happens once per process and file version (keyed by size and mtime).
        """
        path = osp.join(self.round_dir(k), record['file'])
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        key = (path, record['sha256'], st.st_size, st.st_mtime_ns)
        if key not in self._verified:
            if sha256_file(path) != record['sha256']:
                return False
            self._verified[key] = True
        return True

    def verify_round(self, k: int) -> List[Dict[str, Any]]:
        """Records of round ``k``'s shards that are missing or corrupt (empty: all good)."""
        manifest = self.read_manifest(k)
        return [r for r in manifest['shards'] if not self.shard_ok(k, r)]

    def load_shard(self, k: int, record: Dict[str, Any], mmap: bool = True) -> Dict[str, Any]:
        """Load one verified shard (``weights_only``; memory-mapped by default).

        Raises:
            RuntimeError: The shard is missing or its hash does not match the manifest.
        """
        if not self.shard_ok(k, record):
            raise RuntimeError(f'shard {record["file"]} of round {k} in {self.bank_dir} is '
                               'missing or does not match its sha256 in the manifest; it is '
                               'regenerated by SampleRefreshHook on the next run')
        path = osp.join(self.round_dir(k), record['file'])
        return torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)

    def load_round(self, k: int, *, skip_bad: bool = False) -> Dict[str, Any]:
        """All images and targets of round ``k``, shards in (rank, index) order.

        Args:
            k (int): Round.
            skip_bad (bool): Leave out missing/corrupt shards instead of raising.
                Defaults to False.

        Returns:
            dict: ``images`` (N, C, H, W), ``targets`` (list, one per image, or None),
            ``manifest`` and ``skipped`` (names of the shards left out).
        """
        manifest = self.read_manifest(k)
        images, targets, skipped = [], [], []
        for rec in manifest['shards']:
            if not self.shard_ok(k, rec):
                if not skip_bad:
                    self.load_shard(k, rec)  # raises with the explanation
                skipped.append(rec['file'])
                continue
            shard = self.load_shard(k, rec)
            images.append(shard['images'])
            t = shard.get('targets')
            targets.extend(t if t is not None else [None] * len(shard['images']))
        if not images:
            raise RuntimeError(f'round {k} of {self.bank_dir} has no readable shard '
                               f'(bad: {skipped})')
        return dict(images=torch.cat(images) if len(images) > 1 else images[0],
                    targets=targets, manifest=manifest, skipped=skipped)
