"""Calibrate the student's quantizer ranges on batches of the (real) training set.

The data-free path calibrates on bootstrap synthetic images (``SampleRefreshHook``).
When some real images may be used after all (the real-data upper bound of the
benchmarks, or a user who holds a few unlabeled images), this hook calibrates on the
first batches of ``train_dataloader`` instead, and the same MaskAQ QAT runs on them:
``MaskAQAlgorithm.loss`` distils the teacher and never reads the labels.
"""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

META_KEY = 'maskaq_data_calibration'


@HOOKS.register_module()
class DataCalibrationHook(Hook):
    """Calibrate the quantizer ranges on ``num_batches`` training batches before training.

    Runs once per fresh run; after ``resume`` or ``load_from`` of a checkpoint written
    with this hook the trained ranges come from the checkpoint and are not recalibrated.
    Use it instead of ``SampleRefreshHook`` (not with it).

    Args:
        num_batches (int): Training batches (after the data preprocessor) used for the
            ranges. Defaults to 1.
    """

    priority = 'NORMAL'

    def __init__(self, num_batches: int = 1):
        if not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f'num_batches must be a positive int, got {num_batches!r}')
        self.num_batches = num_batches
        self._calibrated = False

    def before_train(self, runner) -> None:
        if self._calibrated:
            runner.logger.info('quantizer ranges come from the loaded checkpoint: not '
                               'recalibrating')
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'calibrate_student_'):
            raise TypeError(f'DataCalibrationHook needs a MaskAQAlgorithm model, got '
                            f'{type(model).__name__}')
        batches, count = [], 0
        for i, data in enumerate(runner.train_dataloader):
            if i == self.num_batches:
                break
            inputs = model.data_preprocessor(data, training=True)['inputs']
            batches.append(inputs)
            count += inputs.shape[0]
        if not batches:
            raise RuntimeError('DataCalibrationHook: train_dataloader yielded no batch; '
                               'check its dataset')
        model.calibrate_student_(batches)  # backbone, and the head when quantized
        self._calibrated = True
        runner.logger.info(f'calibrated the student quantizer ranges on {count} training '
                           f'images ({len(batches)} batch(es)) of '
                           f'{type(runner.train_dataloader.dataset).__name__}')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})[META_KEY] = dict(calibrated=self._calibrated)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if checkpoint.get('meta', {}).get(META_KEY, {}).get('calibrated'):
            self._calibrated = True
