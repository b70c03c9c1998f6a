# MaskAQ W4A4: as the W4A8 config, with 4-bit activations.
_base_ = ['./maskaq_swin-tiny-patch4-window7_upernet_ade20k-512x512_w4a8.py']

model = dict(a_bits=4)
