"""Stage 1 inside an MMEngine run: synthesise the sample bank, refresh it every R epochs.

docs/method.md: round 0 is (1) a bootstrap synthesis without the student (L_head, L_sem, L_tv,
L_ent), (2) calibration of the student's quantizer ranges on those images (in place: the
optimizer already holds the quantizer parameters), (3) the full MaskAQ synthesis with
the student in the loop. Every ``interval`` epochs (or iterations) the bank is
regenerated against the current student. The round and the manifest's hash ride in the
checkpoint, so a resumed run reuses (or repairs) the bank instead of re-synthesising and
never recalibrates trained ranges. Within a round each rank records its finished shards
(:mod:`.round_progress`): a rerun after a kill in the middle of a round reuses them when
the student is bit-identical, so round 0 loses only the shard in flight.
"""
import os.path as osp
from typing import Optional

import numpy as np
import torch
from mmengine.dist import barrier, get_dist_info, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ...synthesis.bank import SampleBank
from ...utils.seeding import derive_seed
from .round_progress import RoundProgress, state_key

META_KEY = 'maskaq_sample_bank'


def _plain_targets(task: str, targets: list) -> list:
    """Prior targets -> plain per-image values for a shard (``weights_only`` safe)."""
    if task == 'det':
        return [dict(bboxes=t.gt_instances.bboxes.detach().cpu().float(),
                     labels=t.gt_instances.labels.detach().cpu().long()) for t in targets]
    if task == 'seg':
        return [t.gt_sem_seg.data[0].detach().cpu().to(torch.uint8 if int(
            t.gt_sem_seg.data.max()) < 256 else torch.int32) for t in targets]
    return [int(t) for t in targets]


def _synthetic_dataset(runner):
    from ...datasets import MaskAQSyntheticDataset
    dataset = runner.train_dataloader.dataset
    while not isinstance(dataset, MaskAQSyntheticDataset) and hasattr(dataset, 'dataset'):
        dataset = dataset.dataset
    if not isinstance(dataset, MaskAQSyntheticDataset):
        raise TypeError(f'SampleRefreshHook needs train_dataloader.dataset of type '
                        f'MaskAQSyntheticDataset, got {type(dataset).__name__}')
    return dataset


@HOOKS.register_module()
class SampleRefreshHook(Hook):
    """Write round 0 of the sample bank before training and refresh it periodically.

    ``before_train`` sets the dataset's ``bank_dir`` (``None`` → ``<work_dir>/sample_bank``)
    and model fingerprint, then writes round 0, or, after ``resume`` / ``load_from`` of a
    MaskAQ checkpoint, reuses (and repairs) the round recorded in it. It is not done in
    ``before_run`` so that ``runner.test()`` / ``val()`` with the same config never build
    the synthetic train loader.

    Args:
        interval (int): Refresh every ``interval`` epochs (iterations when
            ``by_epoch=False``); 0 never refreshes. Defaults to 30.
        by_epoch (bool): Count ``interval`` in epochs. Defaults to True.
        num_samples (int, optional): Images per round, over all ranks. Defaults to None
            (the dataset's ``num_samples``).
        batch_size (int): Synthesis batch size; one shard per batch. Defaults to 16.
        synthesis (dict, optional): ``Synthesizer`` options: ``method`` ('maskaq'),
            ``iters`` (2000), ``lr`` (0.1), ``loss_weights``, ``max_retries``,
            ``mask_mode`` ('informative'; 'random' is the ablation). Defaults to None.
        bootstrap_iters (int, optional): Iterations of the bootstrap synthesis (no
            student) whose images calibrate the quantizers. Defaults to None (same as
            ``synthesis.iters``).
        bootstrap_samples (int, optional): Bootstrap images per rank. Defaults to None
            (``batch_size``).
        seed (int, optional): Base seed; ranks, rounds and shards get derived seeds.
            Defaults to None (the Runner's seed, else 0).
        keep_rounds (int): Complete rounds kept on disk. Defaults to 1.
        progress (bool): Progress bars during synthesis. Defaults to False.
    """

    priority = 'NORMAL'  # before CheckpointHook (VERY_LOW): checkpoints see the new round

    def __init__(self, interval: int = 30, by_epoch: bool = True,
                 num_samples: Optional[int] = None, batch_size: int = 16,
                 synthesis: Optional[dict] = None, bootstrap_iters: Optional[int] = None,
                 bootstrap_samples: Optional[int] = None, seed: Optional[int] = None,
                 keep_rounds: int = 1, progress: bool = False):
        if not isinstance(interval, int) or interval < 0:
            raise ValueError(f'interval must be an int >= 0, got {interval!r}')
        for name, value in (('num_samples', num_samples), ('bootstrap_iters', bootstrap_iters),
                            ('bootstrap_samples', bootstrap_samples)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f'{name} must be None or a positive int, got {value!r}')
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f'batch_size must be a positive int, got {batch_size!r}')
        if not isinstance(keep_rounds, int) or keep_rounds < 1:
            raise ValueError(f'keep_rounds must be an int >= 1, got {keep_rounds!r}')
        synthesis = dict(synthesis or {})
        unknown = set(synthesis) - {'method', 'iters', 'lr', 'loss_weights', 'max_retries',
                                    'mask_mode'}
        if unknown:
            raise ValueError(f'unknown synthesis keys {sorted(unknown)}; known: method, '
                             'iters, lr, loss_weights, max_retries, mask_mode')
        self.interval, self.by_epoch = interval, by_epoch
        self.num_samples, self.batch_size = num_samples, batch_size
        self.synthesis = synthesis
        self.bootstrap_iters = bootstrap_iters
        self.bootstrap_samples = bootstrap_samples
        self.seed, self.keep_rounds, self.progress = seed, keep_rounds, progress
        self.refresh_round: Optional[int] = None  # round the dataset reads now
        self._loaded: Optional[dict] = None  # our checkpoint meta, after a load/resume
        self.bank: Optional[SampleBank] = None

    # --------------------------------------------------------------- helpers
    @staticmethod
    def _algorithm(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'build_synthesizer'):
            raise TypeError(f'SampleRefreshHook needs a MaskAQAlgorithm model, got '
                            f'{type(model).__name__}')
        return model

    def _shard_seed(self, k: int, index: int) -> int:
        return derive_seed(self.seed, k, index)

    def _log(self, runner, k: int, stage: str, losses: dict) -> None:
        """Log the loss terms; message hub keys ``synthesis/<term>`` (bootstrap:
        ``synthesis/bootstrap_<term>``)."""
        text = ', '.join(f'{key}={value:.4g}' for key, value in sorted(losses.items()))
        runner.logger.info(f'sample bank round {k}, {stage}: {text or "no loss terms"}')
        prefix = 'synthesis/bootstrap_' if stage == 'bootstrap' else 'synthesis/'
        for key, value in losses.items():
            runner.message_hub.update_scalar(prefix + key, value)

    # ----------------------------------------------------------------- hooks
    def before_run(self, runner) -> None:
        if self.seed is None:
            self.seed = int(getattr(runner, 'seed', None) or 0)

    def before_train(self, runner) -> None:
        algo = self._algorithm(runner)
        dataset = _synthetic_dataset(runner)
        if dataset.bank_dir is None:
            dataset.bank_dir = osp.join(runner.work_dir, 'sample_bank')
        dataset.fingerprint = algo.fingerprint()
        self.bank = SampleBank(dataset.bank_dir, fingerprint=dataset.fingerprint)
        if self.num_samples is None:
            self.num_samples = dataset.num_samples
        if self._loaded is not None:
            self._resume_bank(runner, algo)
        else:
            self._fresh_bank(runner, algo)
        self._restart_prefetching_loader(runner)

    def after_train_epoch(self, runner) -> None:
        if self.by_epoch and self.interval and self.every_n_epochs(runner, self.interval) \
                and runner.epoch + 1 < runner.max_epochs:
            self._refresh(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.by_epoch and self.interval and \
                self.every_n_train_iters(runner, self.interval) and \
                runner.iter + 1 < runner.max_iters:
            self._refresh(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.refresh_round is None or self.bank is None:
            return
        checkpoint.setdefault('meta', {})[META_KEY] = dict(
            refresh_round=int(self.refresh_round),
            manifest_sha256=self.bank.manifest_sha(self.refresh_round))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta', {}).get(META_KEY)
        if meta is not None:
            self._loaded = dict(meta)

    # ------------------------------------------------------------- rounds
    def _fresh_bank(self, runner, algo) -> None:
        """Round 0: bootstrap without Q, calibrate Q's ranges, synthesise with Q."""
        old = self.bank.rounds()
        for k in old:  # raises BankMismatchError for another model's bank
            self.bank.read_manifest(k)
        barrier()
        stale = [k for k in old if k != 0]
        if old:
            runner.logger.warning(
                f'not resuming: {self.bank.bank_dir} holds rounds {old} of a previous run '
                f'of this model; deleting rounds {stale} and synthesising round 0 (which '
                'also calibrates the new student), reusing its shards only if they come '
                'from the same state (teacher, calibrated student, seed, settings)')
        if is_main_process():
            for k in stale:
                self.bank.clear_round(k)
        barrier()
        rank, world = get_dist_info()
        opts = dict(self.synthesis, progress=self.progress)
        if self.bootstrap_iters is not None:
            opts['iters'] = self.bootstrap_iters
        boot = algo.build_synthesizer(with_student=False, **opts)
        n_boot = self.bootstrap_samples or self.batch_size
        seed = derive_seed(self.seed, 0xB007)  # not the API's (seed, 0): see utils.seeding
        result = boot.synthesize(n_boot, self.batch_size, seed=seed)  # rank-specific
        self._log(runner, 0, 'bootstrap', result.losses)
        device = next(algo.student.parameters()).device
        algo.calibrate_student_([x.to(device) for x in result.images.split(self.batch_size)])
        runner.logger.info(f'calibrated the student quantizer ranges on {n_boot} '
                           f'bootstrap images per rank ({world} rank(s))')
        self._write_round(runner, algo, 0)

    def _resume_bank(self, runner, algo) -> None:
        """Reuse the checkpoint's round (repairing bad shards); never recalibrate."""
        k = int(self._loaded['refresh_round'])
        if is_main_process():
            for newer in (r for r in self.bank.rounds() if r > k):
                self.bank.clear_round(newer)  # written after the checkpoint
        barrier()
        if k not in self.bank.rounds():
            runner.logger.info(f'sample bank round {k} (from the checkpoint) is not on disk: '
                               'regenerating it with the loaded student')
            self._write_round(runner, algo, k)
            return
        bad = self.bank.verify_round(k)
        if self.bank.manifest_sha(k) != self._loaded.get('manifest_sha256'):
            runner.logger.warning(f'sample bank round {k} differs from the one recorded in '
                                  'the checkpoint (manifest hash); using it anyway')
        if bad:
            runner.logger.warning(f'sample bank round {k}: regenerating missing or corrupt '
                                  f'shards {[r["file"] for r in bad]}')
            self._write_round(runner, algo, k, only=bad)
        self.refresh_round = k
        runner.logger.info(f'resumed: reusing sample bank round {k} ({self.bank.bank_dir})')

    def _refresh(self, runner) -> None:
        k = (self.refresh_round or 0) + 1
        self._write_round(runner, self._algorithm(runner), k)

    def _write_round(self, runner, algo, k: int, only: Optional[list] = None) -> None:
        """Synthesise round ``k`` with the student in the loop and commit it.

        ``only``: manifest records to regenerate (the others are kept as they are).
        """
        rank, world = get_dist_info()
        synth = algo.build_synthesizer(with_student=self.synthesis.get('method', 'maskaq')
                                       == 'maskaq', **self.synthesis, progress=self.progress)
        progress = None
        if only is None:
            count = self.num_samples // world + int(rank < self.num_samples % world)
            jobs = [(rank, i, min(self.batch_size, count - i * self.batch_size))
                    for i in range((count + self.batch_size - 1) // self.batch_size)]
            # Shards this rank finished before a kill, if made from the same state.
            progress = RoundProgress(self.bank, k, rank, state_key(
                algo, round=k, seed=self.seed, world=world, num_samples=self.num_samples,
                batch_size=self.batch_size, synthesis=self.synthesis,
                fingerprint=algo.fingerprint(), scheme=algo.scheme.to_dict()))
            progress.collect()  # every rank reads before the main rank deletes anything
            barrier()
            keep = progress.resume(jobs, world, is_main_process())
            barrier()
            done = {(r['rank'], r['index'], r['num_images']) for r in keep}
            jobs = [job for job in jobs if job not in done]
            if keep:
                runner.logger.info(f'sample bank round {k}: reusing {len(keep)} shard(s) '
                                   f'written before an interruption (rank {rank}), '
                                   f'synthesising {len(jobs)}')
        else:
            manifest = self.bank.read_manifest(k)
            bad = {r['file'] for r in only}
            mine = [r for r in manifest['shards'] if r['rank'] % world == rank]
            # A shard keeps its file name (original rank) when the world size changed.
            jobs = [(r['rank'], r['index'], r['num_images']) for r in mine
                    if r['file'] in bad]
            keep = [r for r in mine if r['file'] not in bad]
        records, losses = list(keep), []
        for owner, index, n in jobs:
            seed = self._shard_seed(k, owner * 100003 + index)
            result = synth.synthesize(n, n, seed=seed)  # the synthesizer adds the rank
            records.append(self.bank.write_shard(
                k, result.images, rank=owner, index=index,
                targets=_plain_targets(algo.task, result.targets),
                meta=dict(seed=seed, losses=result.losses)))
            if progress is not None:
                progress.add(records[-1])
            losses.append(result.losses)
        mean = {key: float(np.mean([d[key] for d in losses])) for key in
                (losses[0] if losses else {})}
        if mean:
            self._log(runner, k, 'synthesis', mean)
        manifest = self.bank.commit_round(k, records, seed=self.seed, extra=dict(
            norm=algo.norm, task=algo.task, scheme=algo.scheme.to_dict(),
            state_key=progress.key if progress is not None else None))
        if progress is not None:
            progress.finish()
        self.refresh_round = k
        if is_main_process():
            deleted = self.bank.prune(self.keep_rounds)
            if deleted:
                runner.logger.info(f'sample bank: pruned rounds {deleted}')
        runner.logger.info(f'sample bank round {k}: {manifest["num_images"]} images in '
                           f'{len(manifest["shards"])} shard(s) at {self.bank.round_dir(k)}')

    @staticmethod
    def _restart_prefetching_loader(runner) -> None:
        """Restart an iteration-based loop's dataloader iterator after the bank exists.

        ``IterBasedTrainLoop`` creates its infinite iterator when the loop is built,
        before any hook: with workers, they were forked (and started prefetching) with a
        dataset that had no bank yet. A new iterator forks workers that see the bank.
        """
        loop = runner.train_loop
        iterator = getattr(loop, 'dataloader_iterator', None)
        loader = getattr(loop, 'dataloader', None)
        if iterator is None or getattr(loader, 'num_workers', 0) == 0:
            return
        workers = getattr(iterator, '_iterator', None)
        if hasattr(workers, '_shutdown_workers'):
            workers._shutdown_workers()
        if hasattr(loader, '_iterator'):  # persistent workers are cached by the loader
            loader._iterator = None
        batch_sampler = getattr(loader, 'batch_sampler', None)
        sampler = getattr(batch_sampler, 'sampler', None) or getattr(loader, 'sampler', None)
        if hasattr(sampler, '_indices_of_rank'):
            # mmengine's InfiniteSampler yields from one generator made in __init__, which
            # closed with the old iterator: start it again (same sequence, from the start).
            sampler.indices = sampler._indices_of_rank()
        loop.dataloader_iterator = type(iterator)(loader)
