"""The round service: Stage 1 of one run, whatever drives it.

docs/method.md: round 0 is (1) a bootstrap synthesis without the student (L_head, L_sem,
L_tv, L_ent), (2) calibration of the student's quantizer ranges on those images (in place:
an optimizer may already hold the quantizer parameters), (3) the full MaskAQ synthesis
with the student in the loop. A refresh synthesises round ``k + 1`` against the current
student. :func:`maskaq_plugin.quantize_data_free`, ``SampleRefreshHook`` and
``tools/synthesize.py`` all run these steps through :class:`RoundService`, which decides
everything the images depend on: how many bootstrap images, the calibration set, the
split of a round into shards (one synthesis batch each) over ranks, and the seeds.

Seeds (:mod:`maskaq_plugin.utils.seeding`): the bootstrap is seeded with
``(seed, BOOTSTRAP_TAG)``, each shard by :func:`~.shards.shard_seed`. With a
:class:`~maskaq_plugin.synthesis.SampleBank` shards are written atomically, a round is
committed with a manifest, older rounds are pruned, and a rerun after a kill reuses the
shards each rank finished (:class:`~.shards.RoundProgress`) when the student is
bit-identical. Without a bank (the Python API) a round's images are returned. No MMEngine
runner or hook is imported: the service takes plain callables and objects.
"""
import logging
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log
from torch import Tensor, nn

from ..utils.seeding import derive_seed
from .bank import SampleBank
from ..tasks import get_task
from .shards import Job, RoundProgress, shard_jobs, shard_seed, state_key
from .synthesizer import SynthesisResult

BOOTSTRAP_TAG = 0xB007
SYNTHESIS_KEYS = ('method', 'iters', 'lr', 'loss_weights', 'max_retries', 'mask_mode')


def check_synthesis(synthesis: Optional[dict]) -> dict:
    """``synthesis`` as a dict; raise on a key :class:`Synthesizer` rounds do not take."""
    synthesis = dict(synthesis or {})
    unknown = set(synthesis) - set(SYNTHESIS_KEYS)
    if unknown:
        raise ValueError(f'unknown synthesis keys {sorted(unknown)}; known: '
                         f'{", ".join(SYNTHESIS_KEYS)}')
    return synthesis


class RoundService:
    """Bootstrap, calibration and synthesis rounds of one run (see the module docstring).

    Args:
        build_synthesizer (Callable): ``f(with_student, **options)`` returning a
            :class:`~maskaq_plugin.synthesis.Synthesizer` (options: ``synthesis`` keys
            and ``progress``), e.g. ``MaskAQAlgorithm.build_synthesizer``.
        calibrate (Callable): ``f(batches, subset_size=n)`` setting the student's ranges
            in place from image batches, e.g. ``MaskAQAlgorithm.calibrate_student_``.
        num_samples (int): Images per round, over all ranks.
        batch_size (int): Synthesis batch size; one shard per batch. Defaults to 16.
        task (str): ``'cls'``, ``'det'`` or ``'seg'`` (targets stored). Defaults to 'cls'.
        seed (int): Base seed. Defaults to 0.
        synthesis (dict, optional): ``Synthesizer`` options of every round (keys
            ``SYNTHESIS_KEYS``); ``method='maskaq'`` (default) puts the student in the
            loop. Defaults to None.
        bootstrap_iters (int, optional): Iterations of the bootstrap. Defaults to None
            (``synthesis['iters']``).
        bootstrap_samples (int, optional): Bootstrap (and calibration) images per rank.
            Defaults to None (``batch_size``).
        bank (SampleBank, optional): Where rounds are written. Defaults to None (rounds
            are returned, not written).
        keep_rounds (int): Complete rounds kept in the bank. Defaults to 1.
        state (nn.Module, optional): What a shard depends on besides the settings (its
            state dict is hashed into the resume key). Defaults to None (no resume).
        identity (dict, optional): Plain-typed settings added to the resume key.
        manifest (dict, optional): Plain-typed entries of every manifest.
        device (torch.device, optional): Of the calibration batches. Defaults to CPU.
        rank (int, optional), world (int, optional): Defaults to None
            (``mmengine.dist.get_dist_info()``).
        progress (bool): Progress bars. Defaults to False.
        log (Callable, optional): ``f(msg, level)``. Defaults to ``print_log``.
        scalars (Callable, optional): ``f(key, value)`` for the loss means
            (``synthesis/<term>``, ``synthesis/bootstrap_<term>``). Defaults to None.
    """

    def __init__(self, build_synthesizer: Callable, calibrate: Callable, *,
                 num_samples: int, batch_size: int = 16, task: str = 'cls', seed: int = 0,
                 synthesis: Optional[dict] = None, bootstrap_iters: Optional[int] = None,
                 bootstrap_samples: Optional[int] = None, bank: Optional[SampleBank] = None,
                 keep_rounds: int = 1, state: Optional[nn.Module] = None,
                 identity: Optional[dict] = None, manifest: Optional[dict] = None,
                 device=None, rank: Optional[int] = None, world: Optional[int] = None,
                 progress: bool = False, log: Optional[Callable] = None,
                 scalars: Optional[Callable] = None):
        for name, value in (('num_samples', num_samples), ('batch_size', batch_size),
                            ('keep_rounds', keep_rounds)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        self.build_synthesizer, self.calibrate = build_synthesizer, calibrate
        self.num_samples, self.batch_size, self.task = num_samples, batch_size, task
        self.seed, self.synthesis = int(seed), check_synthesis(synthesis)
        self.bootstrap_iters = bootstrap_iters
        self.bootstrap_samples = bootstrap_samples or batch_size
        self.bank, self.keep_rounds, self.state = bank, keep_rounds, state
        self.identity, self.manifest = dict(identity or {}), dict(manifest or {})
        self.device = device
        dist_rank, dist_world = get_dist_info()
        self.rank = dist_rank if rank is None else rank
        self.world = dist_world if world is None else world
        self.progress = progress
        self.log = log or (lambda msg, level: print_log(msg, logger='current', level=level))
        self.scalars = scalars
        self.round: Optional[int] = None  # the round written (or returned) last
        self.label = 'sample bank round' if bank is not None else 'synthesis round'

    @classmethod
    def for_algorithm(cls, algo, bank: SampleBank, *, num_samples: int,
                      batch_size: int = 16, seed: int = 0,
                      synthesis: Optional[dict] = None, **kwargs) -> 'RoundService':
        """The service of a ``MaskAQAlgorithm`` (its synthesizer, calibration, task and
        bank identity); ``kwargs``: other :class:`RoundService` arguments."""
        scheme = algo.scheme.to_dict()
        return cls(algo.build_synthesizer, algo.calibrate_student_, num_samples=num_samples,
                   batch_size=batch_size, task=algo.task, seed=seed, synthesis=synthesis,
                   bank=bank, state=algo,
                   identity=dict(fingerprint=algo.fingerprint(), scheme=scheme),
                   manifest=dict(norm=algo.norm, task=algo.task, scheme=scheme),
                   device=next(algo.student.parameters()).device, **kwargs)


    # ------------------------------------------------------------------ rounds
    def bootstrap(self) -> SynthesisResult:
        """Synthesise the bootstrap images (no student) and calibrate the student on them."""
        opts = dict(self.synthesis, progress=self.progress)
        if self.bootstrap_iters is not None:
            opts['iters'] = self.bootstrap_iters
        n = self.bootstrap_samples
        start = time.time()
        result = self.build_synthesizer(with_student=False, **opts).synthesize(
            n, self.batch_size, seed=derive_seed(self.seed, BOOTSTRAP_TAG))  # rank-specific
        self._log_losses(0, 'bootstrap', result.losses, n, time.time() - start)
        device = self.device if self.device is not None else 'cpu'
        self.calibrate([x.to(device) for x in result.images.split(self.batch_size)],
                       subset_size=n)
        self.log(f'calibrated the student quantizer ranges on {n} bootstrap images per '
                 f'rank ({self.world} rank(s))', logging.INFO)
        return result

    def start(self) -> Optional[Tensor]:
        """Round 0 of a new run: bootstrap, calibrate, synthesise round 0 with the student.

        With a bank, rounds a previous run of this model left are deleted (round 0's
        shards are reused only when they come from the same state); a bank of another
        model raises :class:`~maskaq_plugin.synthesis.bank.BankMismatchError`.
        """
        if self.bank is not None:
            old = self.bank.rounds()
            for k in old:  # raises BankMismatchError for another model's bank
                self.bank.read_manifest(k)
            barrier()
            stale = [k for k in old if k != 0]
            if old:
                self.log(f'not resuming: {self.bank.bank_dir} holds rounds {old} of a '
                         f'previous run of this model; deleting rounds {stale} and '
                         'synthesising round 0 (which also calibrates the new student), '
                         'reusing its shards only if they come from the same state '
                         '(teacher, calibrated student, seed, settings)', logging.WARNING)
            if self.rank == 0:
                for k in stale:
                    self.bank.clear_round(k)
            barrier()
        self.bootstrap()
        return self.run_round(0)

    def refresh(self) -> Optional[Tensor]:
        """Synthesise the next round against the current student."""
        return self.run_round(0 if self.round is None else self.round + 1)

    def resume(self, k: int, manifest_sha256: Optional[str] = None) -> None:
        """Reuse round ``k`` of the bank (repairing bad shards); never recalibrate.

        Rounds after ``k`` are deleted; a missing round is synthesised with the student.
        """
        bank = self.bank
        if self.rank == 0:
            for newer in (r for r in bank.rounds() if r > k):
                bank.clear_round(newer)  # written after the checkpoint
        barrier()
        if k not in bank.rounds():
            self.log(f'sample bank round {k} (from the checkpoint) is not on disk: '
                     'regenerating it with the loaded student', logging.INFO)
            self.run_round(k)
            return
        bad = bank.verify_round(k)
        if bank.manifest_sha(k) != manifest_sha256:
            self.log(f'sample bank round {k} differs from the one recorded in the '
                     'checkpoint (manifest hash); using it anyway', logging.WARNING)
        if bad:
            self.log(f'sample bank round {k}: regenerating missing or corrupt shards '
                     f'{[r["file"] for r in bad]}', logging.WARNING)
            self.run_round(k, only=bad)
        self.round = k
        self.log(f'resumed: reusing sample bank round {k} ({bank.bank_dir})', logging.INFO)

    def run_round(self, k: int, only: Optional[List[dict]] = None) -> Optional[Tensor]:
        """Synthesise round ``k`` (this rank's shards) and commit it.

        Args:
            k (int): Round.
            only (list[dict], optional): Manifest records to regenerate (the others are
                kept as they are). Defaults to None (the whole round).

        Returns:
            Tensor | None: Without a bank, the round's images ``(N, C, H, W)``; with a
            bank, None (the round is on disk).
        """
        progress, keep = None, []
        jobs = shard_jobs(self.num_samples, self.batch_size, self.rank, self.world)
        if self.bank is not None and only is not None:
            bad = {r['file'] for r in only}
            mine = [r for r in self.bank.read_manifest(k)['shards']
                    if r['rank'] % self.world == self.rank]
            # A shard keeps its file name (original rank) when the world size changed.
            jobs = [(r['rank'], r['index'], r['num_images']) for r in mine if r['file'] in bad]
            keep = [r for r in mine if r['file'] not in bad]
        elif self.bank is not None and self.state is not None:
            progress, keep, jobs = self._resumable(k, jobs)
        with_student = self.synthesis.get('method', 'maskaq') == 'maskaq'
        synth = self.build_synthesizer(with_student=with_student, **self.synthesis,
                                       progress=self.progress)
        records, images, losses, start = list(keep), [], [], time.time()
        for owner, index, n in jobs:
            seed = shard_seed(self.seed, k, owner, index)
            result = synth.synthesize(n, n, seed=seed)  # the synthesizer adds the rank
            losses.append(result.losses)
            if self.bank is None:
                images.append(result.images)
                continue
            records.append(self.bank.write_shard(
                k, result.images, rank=owner, index=index,
                targets=get_task(self.task).plain_targets(result.targets),
                meta=dict(seed=seed, losses=result.losses)))
            if progress is not None:
                progress.add(records[-1])
        mean = {key: float(np.mean([d[key] for d in losses])) for key in
                (losses[0] if losses else {})}
        if mean:
            self._log_losses(k, 'synthesis', mean, sum(j[2] for j in jobs),
                             time.time() - start)
        if self.bank is not None:
            self._commit(k, records, progress)
        self.round = k
        return torch.cat(images) if self.bank is None else None

    # --------------------------------------------------------------- internals
    def _resumable(self, k: int, jobs: List[Job]):
        """The shards this rank finished before a kill, if made from the same state."""
        progress = RoundProgress(self.bank, k, self.rank, state_key(
            self.state, round=k, seed=self.seed, world=self.world,
            num_samples=self.num_samples, batch_size=self.batch_size,
            synthesis=self.synthesis, **self.identity))
        progress.collect()  # every rank reads before the main rank deletes anything
        barrier()
        keep = progress.resume(jobs, self.world, self.rank == 0)
        barrier()
        done = {(r['rank'], r['index'], r['num_images']) for r in keep}
        todo = [job for job in jobs if job not in done]
        if keep:
            self.log(f'sample bank round {k}: reusing {len(keep)} shard(s) written before '
                     f'an interruption (rank {self.rank}), synthesising {len(todo)}',
                     logging.INFO)
        return progress, keep, todo

    def _commit(self, k: int, records: List[dict], progress: Optional[RoundProgress]):
        manifest = self.bank.commit_round(k, records, seed=self.seed, extra=dict(
            self.manifest, state_key=progress.key if progress is not None else None))
        if progress is not None:
            progress.finish()
        if self.rank == 0:
            deleted = self.bank.prune(self.keep_rounds)
            if deleted:
                self.log(f'sample bank: pruned rounds {deleted}', logging.INFO)
        self.log(f'sample bank round {k}: {manifest["num_images"]} images in '
                 f'{len(manifest["shards"])} shard(s) at {self.bank.round_dir(k)}',
                 logging.INFO)

    def _log_losses(self, k: int, stage: str, losses: Dict[str, float], n: int,
                    seconds: float) -> None:
        """Log the loss means; ``scalars`` keys ``synthesis/<term>`` (bootstrap:
        ``synthesis/bootstrap_<term>``)."""
        text = ', '.join(f'{key}={value:.4g}' for key, value in sorted(losses.items()))
        self.log(f'{self.label} {k}, {stage}: {text or "no loss terms"} ({n} images on '
                 f'rank {self.rank}, {seconds:.1f}s)', logging.INFO)
        prefix = 'synthesis/bootstrap_' if stage == 'bootstrap' else 'synthesis/'
        for key, value in losses.items():
            if self.scalars is not None:
                self.scalars(prefix + key, value)

