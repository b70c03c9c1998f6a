"""SynthesisObjective: L_head is the authors' mean over ALL attention layers."""
import os.path as osp
import sys

import torch

from maskaq_plugin.attention import AttentionRecorder, make_attention_explicit
from maskaq_plugin.synthesis import ClassificationPrior
from maskaq_plugin.synthesis.objective import SynthesisObjective, key_grid

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'test_losses'))
from authors_ssim import authors_swin_layer  # noqa: E402


def test_head_term_counts_single_head_layers_in_the_layer_mean():
    """Swin with a single-head first stage (2 layers) and a 2-head second stage (1 layer):
    L_head = (0 + 0 + L_3) / 3, the authors' mean of per-layer means (the former code
    left the single-head layers out and averaged head pairs: 6 times this value)."""
    from timm.models.swin_transformer import SwinTransformer
    torch.manual_seed(0)
    swin = SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16,
                           depths=(2, 1), num_heads=(1, 2), num_classes=10).eval()
    make_attention_explicit(swin)
    objective = SynthesisObjective(swin, ClassificationPrior(10), ('head', ),
                                   teacher_attn_root=swin)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    x_aug = x.flip(-1)
    with torch.no_grad():
        terms, mask = objective(x, x_aug, torch.tensor([1, 2]), mask_ratio=0.5,
                                generator=torch.Generator().manual_seed(2))
        with AttentionRecorder(swin) as rec:
            swin(x_aug)
    assert set(terms) == {'head'} and mask is None
    heads = [r.scores.shape[1] for r in rec.records]
    assert heads == [1, 1, 2]
    per_layer = torch.stack([authors_swin_layer(r.scores.double(), key_grid(r))
                             for r in rec.records])
    assert per_layer[:2].abs().max() == 0 and per_layer[2] > 1e-3
    torch.testing.assert_close(terms['head'].double(), per_layer.mean(), rtol=1e-5,
                               atol=1e-7)
