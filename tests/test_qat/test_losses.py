"""Stage 2 losses from attention records: L_mssim per group, classifier KD + λ·L_mssim."""
import pytest
import torch

from maskaq_plugin.attention import AttentionRecord, AttentionRecorder, make_attention_explicit
from maskaq_plugin.losses.functional import kd_kl_loss, masked_attention_ssim
from maskaq_plugin.qat import classification_qat_loss, mssim_from_records


def records(shapes, seed, has_cls=True):
    gen = torch.Generator().manual_seed(seed)
    return [AttentionRecord(f'l{i}', torch.randn(b, h, n, n, generator=gen),
                            torch.randn(b, h, n, d, generator=gen), has_cls)
            for i, (b, h, n, d) in enumerate(shapes)]


def test_mssim_is_the_mean_over_layers_of_per_group_losses():
    shapes = [(2, 2, 17, 8), (2, 2, 17, 8), (2, 4, 5, 8)]  # two groups: 2 layers + 1 layer
    fp, q = records(shapes, 0), records(shapes, 1)
    got = mssim_from_records(fp, q, top_ratio=0.2)
    per_layer = [masked_attention_ssim(a.context, b.context, has_cls_token=True,
                                       top_ratio=0.2) for a, b in zip(fp, q)]
    assert got.item() == pytest.approx(torch.stack(per_layer).mean().item(), rel=1e-5)
    assert mssim_from_records(fp, fp).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match='2 student'):
        mssim_from_records(fp, q[:2])


@pytest.fixture
def pair():
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)
    teacher, student = VisionTransformer(**cfg).eval(), VisionTransformer(**cfg).train()
    make_attention_explicit(teacher)
    make_attention_explicit(student)
    return teacher, student


def test_classification_qat_loss_terms(pair):
    teacher, student = pair
    x = torch.randn(4, 3, 32, 32)
    out = classification_qat_loss(teacher, student, x)
    assert set(out) == {'kd', 'mssim', 'loss'}
    with torch.no_grad():
        kd = kd_kl_loss(teacher(x), student(x), 5.0)
        with AttentionRecorder(teacher) as rf, AttentionRecorder(student) as rq:
            teacher(x)
            student(x)
    assert out['kd'].item() == pytest.approx(kd.item(), rel=1e-5)
    mssim = mssim_from_records(rf.records, rq.records)
    assert out['mssim'].item() == pytest.approx(mssim.item(), rel=1e-5)
    assert out['loss'].item() == pytest.approx(kd.item() + 10 * mssim.item(), rel=1e-5)
    unmasked = classification_qat_loss(teacher, student, x, w_high=1.0)
    assert unmasked['mssim'].item() != pytest.approx(out['mssim'].item(), rel=1e-4)
    kd_only = classification_qat_loss(teacher, student, x, mssim_weight=0)
    assert set(kd_only) == {'kd', 'loss'} and kd_only['loss'] is kd_only['kd']


def test_gradients_reach_only_the_student(pair):
    teacher, student = pair
    classification_qat_loss(teacher, student, torch.randn(2, 3, 32, 32))['loss'].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
