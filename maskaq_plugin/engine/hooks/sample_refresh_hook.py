"""Stage 1 inside an MMEngine run: when to write the sample bank's rounds.

The rounds themselves (bootstrap, calibration, synthesis with the student, sharding over
ranks, resume of unfinished rounds, pruning) are :class:`~maskaq_plugin.synthesis.rounds.
RoundService`'s, the same code as :func:`maskaq_plugin.quantize_data_free`'s. This hook
decides when (before training, every ``interval`` epochs or iterations), carries the round
and its manifest hash in the checkpoint (so a resumed run reuses or repairs the bank and
never recalibrates trained ranges) and points the train dataloader at the bank.
"""
import os.path as osp
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ...synthesis.bank import SampleBank
from ...synthesis.rounds import RoundService, check_synthesis
from ..dataloader import restart_train_iterator, synthetic_dataset

META_KEY = 'maskaq_sample_bank'


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
        self.interval, self.by_epoch, self.seed = interval, by_epoch, seed
        self.options = dict(num_samples=num_samples, batch_size=batch_size,
                            synthesis=check_synthesis(synthesis),
                            bootstrap_iters=bootstrap_iters,
                            bootstrap_samples=bootstrap_samples, keep_rounds=keep_rounds,
                            progress=progress)
        self._loaded: Optional[dict] = None  # our checkpoint meta, after a load/resume
        self.service: Optional[RoundService] = None

    @property
    def refresh_round(self) -> Optional[int]:
        """The round the dataset reads now (None before ``before_train``)."""
        return None if self.service is None else self.service.round

    def before_run(self, runner) -> None:
        if self.seed is None:
            self.seed = int(getattr(runner, 'seed', None) or 0)

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'build_synthesizer'):
            raise TypeError(f'SampleRefreshHook needs a MaskAQAlgorithm model, got '
                            f'{type(model).__name__}')
        dataset = synthetic_dataset(runner.train_dataloader)
        if dataset.bank_dir is None:
            dataset.bank_dir = osp.join(runner.work_dir, 'sample_bank')
        dataset.fingerprint = model.fingerprint()
        options = dict(self.options, num_samples=self.options['num_samples']
                       or dataset.num_samples)
        self.service = RoundService.for_algorithm(
            model, SampleBank(dataset.bank_dir, fingerprint=dataset.fingerprint),
            seed=self.seed, log=lambda msg, level: runner.logger.log(level, msg),
            scalars=runner.message_hub.update_scalar, **options)
        if self._loaded is not None:
            self.service.resume(int(self._loaded['refresh_round']),
                                self._loaded.get('manifest_sha256'))
        else:
            self.service.start()
        restart_train_iterator(runner.train_loop)

    def after_train_epoch(self, runner) -> None:
        if self.by_epoch and self.interval and self.every_n_epochs(runner, self.interval) \
                and runner.epoch + 1 < runner.max_epochs:
            self.service.refresh()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.by_epoch and self.interval and \
                self.every_n_train_iters(runner, self.interval) and \
                runner.iter + 1 < runner.max_iters:
            self.service.refresh()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.refresh_round is None:
            return
        checkpoint.setdefault('meta', {})[META_KEY] = dict(
            refresh_round=int(self.refresh_round),
            manifest_sha256=self.service.bank.manifest_sha(self.refresh_round))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta', {}).get(META_KEY)
        if meta is not None:
            self._loaded = dict(meta)
