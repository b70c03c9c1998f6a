"""The classifier QAT loop: eval-mode student, refresh epochs, seeded."""
import copy

import pytest
import torch

import maskaq_plugin.qat.loop as loop
from maskaq_plugin.attention import make_attention_explicit
from maskaq_plugin.qat import RefreshSchedule, run_classification_qat


@pytest.fixture
def pair():
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    teacher = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                num_classes=10, drop_path_rate=0.5).eval()
    make_attention_explicit(teacher)
    student = copy.deepcopy(teacher).train()
    return teacher.requires_grad_(False), student


def test_student_trains_in_eval_mode_and_refreshes(pair, monkeypatch):
    teacher, student = pair
    modes, regenerated = [], []
    loss = loop.classification_terms

    def spy(distiller, t, s, x, generator):
        modes.append(any(m.training for m in s.modules()))
        return loss(distiller, t, s, x, generator)

    def regenerate(epoch):
        regenerated.append(epoch)
        return torch.randn(6, 3, 32, 32)

    monkeypatch.setattr(loop, 'classification_terms', spy)
    before = student.head.weight.detach().clone()
    run_classification_qat(teacher, student, torch.randn(6, 3, 32, 32), mean=(0.5, ) * 3,
                           std=(0.5, ) * 3, epochs=4, batch_size=4, lr=1e-2,
                           refresh=RefreshSchedule(2, 4), regenerate=regenerate)
    assert modes == [False] * 8  # 4 epochs x 2 batches, drop_path off
    assert regenerated == [2]
    assert not torch.equal(before, student.head.weight)
    with pytest.raises(ValueError, match='regenerate'):
        run_classification_qat(teacher, student, torch.randn(2, 3, 32, 32), mean=(0.5, ) * 3,
                               std=(0.5, ) * 3, epochs=4, batch_size=2,
                               refresh=RefreshSchedule(2, 4))


def test_same_seed_same_student(pair):
    teacher, student = pair
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    kw = dict(mean=(0.5, ) * 3, std=(0.5, ) * 3, epochs=2, batch_size=2, lr=1e-2)
    a, b, c = copy.deepcopy(student), copy.deepcopy(student), copy.deepcopy(student)
    run_classification_qat(teacher, a, images, seed=3, **kw)
    run_classification_qat(teacher, b, images, seed=3, **kw)
    run_classification_qat(teacher, c, images, seed=4, **kw)
    assert torch.equal(a.head.weight, b.head.weight)
    assert not torch.equal(a.head.weight, c.head.weight)
