# Full-precision UperNet with a tiny Swin backbone on the digit scenes: the FP teacher of
# the mmseg demos and tests, trained and shipped by tools/train_fp_models.py as
# checkpoints/upernet_swin-tiny_digits.pth. The recipe (model, data, 5000-iteration
# schedule) is the base, which the MaskAQ digit configs inherit too.
_base_ = ['../_base_/upernet_swin-tiny_digits.py']
