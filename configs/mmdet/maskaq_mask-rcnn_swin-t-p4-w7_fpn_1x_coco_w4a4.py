# MaskAQ W4A4: as the W4A8 config, with 4-bit activations.
_base_ = ['./maskaq_mask-rcnn_swin-t-p4-w7_fpn_1x_coco_w4a8.py']

model = dict(a_bits=4)
