# Full-precision Mask R-CNN with a tiny Swin backbone on the digit scenes, trained from
# scratch: the FP teacher of the mmdet demos and tests, trained and shipped by
# tools/train_fp_models.py as checkpoints/maskrcnn_swin-tiny_digits.pth. The recipe (model,
# data, 30-epoch schedule) is the base, which the MaskAQ digit configs inherit too.
_base_ = ['../_base_/maskrcnn_swin-tiny_digits.py']
