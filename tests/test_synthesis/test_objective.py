"""SynthesisObjective: L_head is the authors' mean over ALL attention layers."""
import torch

from maskaq_plugin.attention import AttentionRecorder, make_attention_explicit
from maskaq_plugin.synthesis import ClassificationPrior
from maskaq_plugin.synthesis.objective import SynthesisObjective, key_grid

C1, C2 = 0.01**2, 0.03**2


def authors_swin_layer(att, grid):
    """One layer of the authors' ``ssim_loss_att_map_swin(..., mode='loss')``
    (github.com/hfutqian/MaskAQ): min-max maps, E[x²] − μ² moments, the H×H SSIM matrix
    by broadcasting, ``(1 - ssim**2).mean()``."""
    h, w = grid
    batch, heads, n, d = att.shape
    att_map = att.permute(0, 2, 1, 3).reshape(batch * n, heads, d)
    att_map = att_map - att_map.min(-1, keepdim=True)[0]
    att_map = att_map / (att_map.max(-1, keepdim=True)[0] + 1e-8)
    att_map = att_map.reshape(batch * n, heads, h, w)
    mu = att_map.mean([-2, -1])
    mu_sq = mu.pow(2)
    mu1_mu2 = mu.unsqueeze(1) * mu.unsqueeze(2)
    sigma_sq = (att_map * att_map).mean([-2, -1]) - mu_sq
    sigma12 = (att_map.unsqueeze(1) * att_map.unsqueeze(2)).mean([-2, -1]) - mu1_mu2
    ssim = ((2 * mu1_mu2 + C1) * (2 * sigma12 + C2)) / (
        (mu_sq.unsqueeze(1) + mu_sq.unsqueeze(2) + C1) *
        (sigma_sq.unsqueeze(1) + sigma_sq.unsqueeze(2) + C2))
    return (1 - ssim**2).mean()


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
