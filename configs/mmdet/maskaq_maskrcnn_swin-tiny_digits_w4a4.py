# MaskAQ W4A4 of the tiny Swin Mask R-CNN on the digit scenes (the demo and the end-to-end
# tests); teacher, data and the scaled-down schedule: ../_base_/maskaq_det_digits.py.
_base_ = ['../_base_/maskaq_det_digits.py']

model = dict(w_bits=4, a_bits=4)
