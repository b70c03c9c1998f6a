# MaskAQ W4A4 of the tiny Swin Mask R-CNN on the digit scenes: as the W4A8 config, with
# 4-bit activations.
_base_ = ['./maskaq_maskrcnn_swin-tiny_digits_w4a8.py']

model = dict(a_bits=4)
