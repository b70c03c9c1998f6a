"""One object per task: what classification, detection and segmentation do differently.

Each :class:`Task` holds its synthesis prior (``L_sem``), its task-output distillation
(the ``task`` term of the Stage 2 loss), the plain per-image targets stored in a sample
bank shard, and how the synthetic dataset flips targets and packs data samples. The
rest of the package asks :func:`get_task` instead of branching on the task name.
"""
from .base import Task
from .classification import ClassificationTask
from .detection import DetectionTask
from .segmentation import SegmentationTask

TASKS = {t.name: t for t in (DetectionTask(), SegmentationTask(), ClassificationTask())}


def get_task(name: str) -> Task:
    """The task object of ``'det'``, ``'seg'`` or ``'cls'``.

    Examples:
        >>> get_task('seg').default_augment, get_task('cls').quantize_head
        ('flip', True)
    """
    if name not in TASKS:
        raise ValueError(f'task must be one of {tuple(TASKS)}, got {name!r}')
    return TASKS[name]


__all__ = ['Task', 'ClassificationTask', 'DetectionTask', 'SegmentationTask', 'TASKS',
           'get_task']
