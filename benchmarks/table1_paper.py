"""The paper's Table 1: ImageNet top-1 (%) of data-free quantized ViTs.

Source: Qian, Wang, Wu, Han, "Selective Coupling of Decoupled Informative Regions:
Masked Attention Alignment for Data-Free Quantization of Vision Transformers", ICML 2026,
Table 1 (rows "MaskAQ" and the full-precision row; "MimiQ" rows are the AAAI 2025
baseline as that table reports it). The paper has no Swin-S column here. This is the
only place these figures are written down; tools/table1.py prints them beside ours.
"""
from typing import Dict, Optional

# Columns of Table 1: the paper's label -> timm model name.
MODELS = {
    'ViT-T': 'vit_tiny_patch16_224',
    'ViT-B': 'vit_base_patch16_224',
    'DeiT-T': 'deit_tiny_patch16_224',
    'DeiT-S': 'deit_small_patch16_224',
    'DeiT-B': 'deit_base_patch16_224',
    'Swin-T': 'swin_tiny_patch4_window7_224',
}
LABELS = {name: label for label, name in MODELS.items()}
BITS = ('W3A3', 'W4A4', 'W5A5', 'W4A8')


def _row(*values: float) -> Dict[str, float]:
    return dict(zip(MODELS.values(), values))


# method -> setting ('FP' or 'WxAy') -> timm model name -> top-1 (%)
PAPER_TABLE1 = {
    'fp': {'FP': _row(72.01, 84.53, 72.21, 79.85, 81.85, 81.35)},
    'maskaq': {
        'W3A3': _row(11.50, 43.39, 22.65, 30.41, 43.28, 44.98),
        'W4A4': _row(44.90, 70.53, 53.10, 63.81, 74.41, 70.40),
        'W5A5': _row(63.01, 78.60, 64.27, 73.18, 78.89, 76.82),
        'W4A8': _row(68.36, 84.30, 69.95, 79.44, 81.40, 80.19),
    },
    'mimiq': {
        'W4A4': _row(42.99, 62.91, 52.03, 62.72, 74.10, 69.33),
        'W4A8': _row(68.15, 84.20, 69.86, 78.48, 81.34, 80.06),
    },
}


def paper_top1(model: str, setting: str, method: str = 'fp') -> Optional[float]:
    """The paper's top-1 (%) of ``model`` (timm name, a ``.tag`` suffix is ignored) at
    ``setting`` ('FP', 'W4A4', ...) with ``method``, or None where Table 1 has none.

    Examples:
        >>> paper_top1('deit_tiny_patch16_224', 'W4A8', 'maskaq')
        69.95
        >>> paper_top1('deit_tiny_patch16_224.fb_in1k', 'FP')
        72.21
        >>> paper_top1('deit_tiny_patch16_224', 'W4A8', 'psaq') is None
        True
    """
    return PAPER_TABLE1.get(method, {}).get(setting, {}).get(model.split('.')[0])
