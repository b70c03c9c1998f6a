"""The interface of a task object (see :mod:`maskaq_plugin.tasks`)."""
from typing import Any, List, Sequence, Tuple

from torch import Tensor, nn


class Task:
    """What one task (``name``) does differently in Stage 1, Stage 2 and the dataset.

    Attributes:
        name (str): ``'cls'``, ``'det'`` or ``'seg'`` (the bank manifest's ``task``).
        augments (tuple[str]): QAT augmentations the synthetic dataset offers.
        default_augment (str): The dataset's default augmentation.
        quantize_head (bool): Whether the student's head is quantized by default
            (classifiers, as in the paper; dense tasks quantize the backbone only).
    """
    name: str = ''
    augments: Tuple[str, ...] = ('flip', 'flip_color', 'none')
    default_augment: str = 'flip'
    quantize_head: bool = False

    def prior(self, model: nn.Module, img_shape: Sequence[int]):
        """The Stage 1 task prior (``L_sem``) of ``model`` for images of ``img_shape``."""
        raise NotImplementedError

    def distill(self, loss: nn.Module, teacher: nn.Module, student: nn.Module,
                feats_fp: Any, feats_q: Any, data_samples: list) -> Tensor:
        """The weighted ``task`` term: ``loss`` (built from the registry) applied to the
        task outputs that the heads of ``teacher`` (no grad) and ``student`` compute from
        the neck outputs ``feats_fp`` / ``feats_q``."""
        raise NotImplementedError

    def plain_targets(self, targets: list) -> list:
        """Prior targets -> plain per-image values for a bank shard (``weights_only``
        safe)."""
        raise NotImplementedError

    def flip_target(self, target: Any, width: int) -> Any:
        """The target of the horizontally flipped image (None stays None)."""
        return target

    def pack(self, image: Tensor, target: Any, meta: dict, ignore_index: int = 255) -> dict:
        """One dataset item through the host library's packing transform:
        ``dict(inputs=(C, H, W) tensor, data_samples=...)``.

        Args:
            image (Tensor): ``(C, H, W)`` float image (raw pixels).
            target (Any): The image's plain target (see :meth:`plain_targets`), or None.
            meta (dict): ``img_id``, ``img_path``, ``ori_shape``, ``img_shape``, ``flip``,
                ``flip_direction``.
            ignore_index (int): Label of a missing segmentation map. Defaults to 255.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


def as_list(x) -> List:
    """A tuple / list of levels as a list, a single tensor as a one-element list."""
    return list(x) if isinstance(x, (tuple, list)) else [x]
