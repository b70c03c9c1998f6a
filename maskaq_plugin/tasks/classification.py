"""Classification (mmpretrain): labels as targets, logit KD on the head."""
import torch

from .base import Task


class ClassificationTask(Task):
    """mmpretrain classifiers: random labels, ``T²·KL`` on the head's logits."""
    name = 'cls'
    augments = ('paper', 'flip', 'flip_color', 'none')
    default_augment = 'paper'
    quantize_head = True

    def prior(self, model, img_shape):
        from ..synthesis.priors import ClassificationPrior
        return ClassificationPrior(model.head.num_classes)

    def distill(self, loss, teacher, student, feats_fp, feats_q, data_samples):
        with torch.no_grad():
            logits_fp = teacher.head(feats_fp)
        return loss(logits_fp, student.head(feats_q))

    def plain_targets(self, targets):
        return [int(t) for t in targets]

    def pack(self, image, target, meta, ignore_index=255):
        from mmpretrain.datasets.transforms import PackInputs
        results = dict(meta, img=image)  # PackInputs keeps a tensor as it is
        if target is not None:
            results['gt_label'] = int(target)
        return PackInputs(meta_keys=tuple(meta)).transform(results)
