"""The QAT training set: the current round of the sample bank, in the host's data format.

MMEngine builds the train dataset before any hook runs, so this dataset has a fixed
length from its config and reads the bank lazily: each item checks (one ``listdir`` and
one ``stat``) whether a newer round or a rewritten manifest exists and reloads it, so
dataloader workers, persistent or not, follow every refresh of SampleRefreshHook.

Items are what the host library's packing transform produces (``PackDetInputs``,
``PackSegInputs``, ``PackInputs``): ``dict(inputs=(C, H, W) float tensor in the RAW pixel
space, data_samples=...)``. The bank stores normalised images; they are mapped back with
the normalisation recorded in the manifest (the model data preprocessor's mean, std and
channel swap), so the preprocessor maps ``inputs`` back to the synthesised image exactly
(up to float rounding).

QAT augmentation (``augment``):

* ``'paper'`` (classification default): docs/method.md Stage 2, RandomResizedCrop, flip,
  colour jitter (0.8, 0.8, 0.8, 0.2; p = 0.8), grayscale (p = 0.2), Gaussian blur;
* ``'flip'`` (detection / segmentation default, *ours*): horizontal flip (p = 0.5) of the
  image and of its boxes / label map. Crops would cut the boxes and masks that the prior
  drew, and KD of dense outputs is sensitive to scale, so nothing geometric beyond flip;
* ``'flip_color'`` (*ours*): flip plus a mild colour jitter (0.4, 0.4, 0.4, 0; p = 0.8);
* ``'none'``.
"""
import os
import os.path as osp
from typing import Any, Dict, List, Optional

import torch
from mmengine.logging import print_log
from mmengine.registry import DATASETS
from torch.utils.data import Dataset

from ..synthesis.bank import SampleBank
from ..tasks import TASKS, get_task

AUGMENTS = ('paper', 'flip', 'flip_color', 'none')


@DATASETS.register_module()
class MaskAQSyntheticDataset(Dataset):
    """Synthetic images of the sample bank, served in mmdet / mmseg / mmpretrain format.

    Args:
        task (str): ``'det'`` (``DetDataSample``), ``'seg'`` (``SegDataSample``) or
            ``'cls'`` (mmpretrain ``DataSample``).
        num_samples (int): Length of the dataset (an epoch). When the current round holds
            fewer images, they repeat (index modulo the round size).
        bank_dir (str, optional): Sample bank directory. Defaults to None: set by
            ``SampleRefreshHook`` to ``<work_dir>/sample_bank`` before training.
        metainfo (dict, optional): Dataset meta (``classes``, ``palette``), stored by the
            Runner in checkpoints: pass the real dataset's. Defaults to None.
        augment (str, optional): ``'paper'``, ``'flip'``, ``'flip_color'`` or
            ``'none'``. Defaults to None: ``'paper'`` for ``cls``, ``'flip'`` otherwise.
        ignore_index (int): Label of the padding of segmentation maps when the bank has
            no label maps. Defaults to 255.
    """

    def __init__(self, task: str, num_samples: int, bank_dir: Optional[str] = None,
                 metainfo: Optional[dict] = None, augment: Optional[str] = None,
                 ignore_index: int = 255):
        if task not in TASKS:
            raise ValueError(f'task must be one of {tuple(TASKS)}, got {task!r}')
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f'num_samples must be a positive int, got {num_samples!r}')
        spec = get_task(task)
        augment = augment or spec.default_augment
        if augment not in spec.augments:
            raise ValueError(f"augment={augment!r} is not available for task={task!r}; "
                             f"use one of {spec.augments} ('paper' is for classification)")
        self.task = task
        self.task_spec = spec
        self.num_samples = num_samples
        self.bank_dir = bank_dir
        self.fingerprint = None  # set by SampleRefreshHook: checked against the manifest
        self._metainfo = dict(metainfo or {})
        self.augment = augment
        self.ignore_index = ignore_index
        self._key = None  # (round, manifest mtime_ns, size) of the loaded round
        self._manifest: Optional[Dict[str, Any]] = None
        self._shards: Optional[List[Dict[str, Any]]] = None
        self._starts: List[int] = []
        self._qat_aug = None

    # ------------------------------------------------------------ mmengine API
    @property
    def metainfo(self) -> dict:
        return dict(self._metainfo)

    def __len__(self) -> int:
        return self.num_samples

    def get_data_info(self, idx: int) -> dict:
        """``width`` / ``height`` of item ``idx`` (read by mmdet's aspect-ratio samplers).

        Before the bank has a round (an iteration-based loop builds its iterator before
        any hook) the size is unknown: ``1 × 1`` is returned. All synthetic images have
        one size, so aspect-ratio grouping cannot mix anything up.
        """
        try:
            _, h, w = self._current_manifest()['input_size']
        except RuntimeError:
            h = w = 1
        return dict(width=w, height=h, sample_idx=idx)

    def __getitem__(self, idx: int) -> dict:
        manifest = self._current_manifest()
        if self._shards is None and not self._load_shards(manifest):
            manifest = self._current_manifest()  # pruned meanwhile: a newer round exists
            self._load_shards(manifest)
        n = self._starts[-1]
        idx = int(idx) % n
        s = max(i for i, start in enumerate(self._starts[:-1]) if start <= idx)
        shard, j = self._shards[s], idx - self._starts[s]
        image = shard['images'][j].clone()  # (C, H, W) normalised
        targets = shard.get('targets')
        target = targets[j] if targets is not None else None
        image, target, flipped = self._augment(image, target, manifest['norm'])
        h, w = (int(v) for v in image.shape[-2:])
        meta = dict(img_id=idx, img_path=f'synthetic_{idx}', ori_shape=(h, w),
                    img_shape=(h, w), flip=flipped,
                    flip_direction='horizontal' if flipped else None)
        return self.task_spec.pack(self._denormalise(image, manifest['norm']), target, meta,
                                   self.ignore_index)

    # ----------------------------------------------------------------- loading
    def _bank(self) -> SampleBank:
        if self.bank_dir is None:
            raise RuntimeError(
                'MaskAQSyntheticDataset.bank_dir is None: add SampleRefreshHook to '
                'custom_hooks (it sets <work_dir>/sample_bank before training) or set '
                'bank_dir in the dataset config')
        if getattr(self, '_bank_obj', None) is None or \
                self._bank_obj.bank_dir != osp.abspath(self.bank_dir) or \
                self._bank_obj.fingerprint != self.fingerprint:
            self._bank_obj = SampleBank(self.bank_dir, fingerprint=self.fingerprint)
            self._key = None
        return self._bank_obj

    def _current_manifest(self) -> Dict[str, Any]:
        """The manifest of the newest complete round; reload when it changed."""
        bank = self._bank()
        k = bank.latest_round()
        if k is None:
            raise RuntimeError(f'the sample bank {bank.bank_dir} has no complete round yet; '
                               'SampleRefreshHook writes round 0 in before_train')
        st = os.stat(bank.manifest_path(k))
        key = (k, st.st_mtime_ns, st.st_size)
        if key != self._key:
            manifest = bank.read_manifest(k)
            if 'norm' not in manifest:
                raise RuntimeError(f'round {k} of {bank.bank_dir} has no normalisation in '
                                   'its manifest; it was not written by SampleRefreshHook')
            self._manifest, self._shards, self._key = manifest, None, key
        return self._manifest

    def _load_shards(self, manifest: Dict[str, Any]) -> bool:
        """Load the readable shards of ``manifest``'s round; False when the round was
        pruned in the meantime and a newer one exists (the caller re-reads)."""
        bank, k = self._bank(), manifest['round']
        shards, starts, bad = [], [0], []
        for rec in manifest['shards']:
            if not bank.shard_ok(k, rec):
                bad.append(rec['file'])
                continue
            shards.append(bank.load_shard(k, rec))
            starts.append(starts[-1] + len(shards[-1]['images']))
        if not shards:
            if bank.latest_round() != k:
                self._key = None
                return False
            raise RuntimeError(f'round {k} of {bank.bank_dir} has no readable shard '
                               f'(bad: {bad})')
        if bad:
            print_log(f'sample bank round {k}: skipping missing/corrupt shards {bad}',
                      logger='current', level=30)
        self._shards, self._starts = shards, starts
        return True

    # ---------------------------------------------------------------- samples
    @staticmethod
    def _denormalise(image: torch.Tensor, norm: dict) -> torch.Tensor:
        """Normalised (model channel order) -> raw pixels in the loader's channel order."""
        mean = torch.tensor(norm['mean'], dtype=image.dtype).view(-1, 1, 1)
        std = torch.tensor(norm['std'], dtype=image.dtype).view(-1, 1, 1)
        raw = image * std + mean
        return raw.flip(0) if norm['bgr_to_rgb'] else raw

    def _augment(self, image: torch.Tensor, target: Any, norm: dict):
        flipped = False
        if self.augment == 'paper':
            image = self._qat_augment(norm)(image[None], self._generator())[0]
        elif self.augment in ('flip', 'flip_color'):
            if torch.rand(()) < 0.5:
                image, target, flipped = image.flip(-1), self.task_spec.flip_target(
                    target, image.shape[-1]), True
            if self.augment == 'flip_color' and image.shape[0] == 3:
                aug = self._qat_augment(norm)
                mean, std = aug.mean[0], aug.std[0]
                img01 = (image * std + mean).clamp(0, 1)
                img01 = aug.colour_jitter(img01[None], self._generator())[0]
                image = (img01 - mean) / std
        return image, target, flipped

    def _qat_augment(self, norm: dict):
        if self._qat_aug is None:
            from ..qat import QATAugment
            mean = [m / 255.0 for m in norm['mean']]
            std = [s / 255.0 for s in norm['std']]
            kwargs = {} if self.augment == 'paper' else dict(jitter=(0.4, 0.4, 0.4, 0.0))
            self._qat_aug = QATAugment(mean, std, **kwargs)
        return self._qat_aug

    @staticmethod
    def _generator() -> torch.Generator:
        # Seeded from the global RNG, which MMEngine seeds per worker.
        return torch.Generator().manual_seed(int(torch.randint(2**62, (1, ))))
