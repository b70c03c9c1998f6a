"""Placement of the quantizers: the paper's scheme, not NNCF's defaults.

Every Linear/Conv input (except the image input of the patch embedding) and weight, and
both operands of both attention matmuls, are quantized; LayerNorm weights, residual adds,
softmax, GELU and Linear outputs are not. Q with its quantizers disabled is F exactly.
"""
import copy
import os.path as osp
import sys

import nncf
import pytest
import torch
import torch.nn.functional as F
from quant_models import TinyMHA, images, tiny_swin, tiny_vit
from nncf.torch.function_hook import wrap_model
from nncf.torch.function_hook.wrapper import get_hook_storage
from torch import nn

from maskaq_plugin.attention import make_attention_explicit
from maskaq_plugin.quant import (QuantizationTraceError, QuantScheme, quantize_model,
                                 quantizer_info, quantizers_disabled)
from maskaq_plugin.quant.placement import _runs_inside, find_hidden_attention
from maskaq_plugin.quant.quantize import trace_graph

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'test_models'))
import tiny_archs  # noqa: E402


def _sites(q):
    return {(i.op, i.port): i.kind for i in quantizer_info(q)}


def _expected_vit(depth, head=True):
    sites = {('patch_embed/proj/conv2d/0', 1): 'weight'}
    for b in range(depth):
        for lin in ('attn/qkv', 'attn/proj', 'mlp/fc1', 'mlp/fc2'):
            sites[(f'blocks/{b}/{lin}/linear/0', 0)] = 'activation'
            sites[(f'blocks/{b}/{lin}/linear/0', 1)] = 'weight'
        for mm in (0, 1):  # q @ kᵀ and attn @ v, both operands
            for port in (0, 1):
                sites[(f'blocks/{b}/attn/matmul/{mm}', port)] = 'activation'
    if head:
        sites[('head/linear/0', 0)] = 'activation'
        sites[('head/linear/0', 1)] = 'weight'
    return sites


def test_vit_placement_is_exactly_the_papers(vit, x):
    q = quantize_model(vit, QuantScheme(8, 8), x)
    assert _sites(q) == _expected_vit(depth=2)
    infos = quantizer_info(q)
    assert all(i.per_channel == (i.kind == 'weight') for i in infos)
    # Nothing on LayerNorm, residual adds, softmax, GELU, or any operation output.
    ops = {i.op_type for i in infos}
    assert ops == {'conv2d', 'linear', 'matmul'}
    assert not any(n.startswith('post_hooks') for n, _ in get_hook_storage(q).named_hooks())
    # The softmax output (attn @ v, port 0) is non-negative: an unsigned quantizer.
    unsigned = {i.op for i in infos if not i.signed}
    assert unsigned == {'blocks/0/attn/matmul/1', 'blocks/1/attn/matmul/1'}


def test_placement_options(vit, x):
    q = quantize_model(vit, QuantScheme(keep_input_fp=False), x)
    assert _sites(q) == {**_expected_vit(2), ('patch_embed/proj/conv2d/0', 0): 'activation'}
    q = quantize_model(vit, QuantScheme(quantize_attention_matmuls=False), x)
    assert _sites(q) == {k: v for k, v in _expected_vit(2).items() if 'matmul' not in k[0]}


def test_nncf_transformer_mode_is_not_the_scheme(vit, x):
    """The pitfall that motivates our own placement: measured, not assumed."""
    q = nncf.quantize(vit, nncf.Dataset([x]), model_type=nncf.ModelType.TRANSFORMER,
                      subset_size=1)
    names = [n for n, _ in get_hook_storage(q).named_hooks()]
    assert not any('softmax' in n or 'matmul/1__1' in n for n in names)  # A and v: FP
    assert any('nncf_smooth_quant' in n or 'SQMultiply' in type(m).__name__
               for n, m in get_hook_storage(q).named_hooks())


def test_swin_placement_covers_window_attention():
    swin, x = tiny_swin(), images(2)
    q = quantize_model(swin, QuantScheme(4, 4), x)
    sites = _sites(q)
    matmuls = {op for op, _ in sites if op.endswith(('matmul/0', 'matmul/1'))}
    assert len(matmuls) == 4  # 2 blocks x (q @ kᵀ, attn @ v)
    assert all((op, p) in sites for op in matmuls for p in (0, 1))
    linears = [op for op, p in sites if op.endswith('linear/0') and p == 1]
    assert all((op, 0) in sites for op in linears)  # incl. patch merging's reduction
    assert ('patch_embed/proj/conv2d/0', 0) not in sites


def test_torch_multihead_attention_placement():
    model, x = TinyMHA().eval(), images(2)
    make_attention_explicit(model)
    sites = _sites(quantize_model(model, QuantScheme(4, 4), x))
    for i in range(4):  # q, k, v and out projections (F.linear inside the MHA scope)
        assert sites[(f'attn/linear/{i}', 0)] == 'activation'
        assert sites[(f'attn/linear/{i}', 1)] == 'weight'
    assert all(sites[(f'attn/matmul/{m}', p)] == 'activation' for m in (0, 1) for p in (0, 1))


def test_q_starts_as_an_exact_copy_of_f(vit, x):
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    q = quantize_model(vit, QuantScheme(4, 4), x)
    assert all(torch.equal(v, q.state_dict()[k]) for k, v in before.items())  # weights
    assert all(torch.equal(v, vit.state_dict()[k]) for k, v in before.items())  # F untouched
    with torch.no_grad(), quantizers_disabled(q):
        assert torch.equal(q(x), vit(x))
    with torch.no_grad():
        assert not torch.allclose(q(x), vit(x), atol=1e-3)
    assert type(q.blocks[0].attn) is type(vit.blocks[0].attn)  # module tree intact


def test_fused_attention_is_refused_with_the_fix(x):
    vit = tiny_vit(explicit=False)
    with pytest.raises(QuantizationTraceError, match=r'blocks\.0\.attn \(Attention\).*'
                       r'make_attention_explicit'):
        quantize_model(vit, QuantScheme(), x)
    quantize_model(vit, QuantScheme(quantize_attention_matmuls=False), x)  # allowed


def test_trace_failure_names_module_and_class(vit):
    wrong = images(1)[:, :, :16, :16]  # the ViT is built for 32 px: PatchEmbed asserts
    with pytest.raises(QuantizationTraceError, match=r"module 'patch_embed' \(PatchEmbed\)"
                       r".*AssertionError"):
        quantize_model(vit, QuantScheme(), wrong)


def test_already_quantized_model_is_refused(vit, x):
    q = quantize_model(vit, QuantScheme(), x)
    with pytest.raises(ValueError, match='already NNCF-wrapped'):
        quantize_model(q, QuantScheme(), x)


def test_attention_taps_work_on_the_quantized_copy(vit, x):
    from maskaq_plugin.attention import AttentionRecorder
    q = quantize_model(vit, QuantScheme(4, 4), x)
    with torch.no_grad(), AttentionRecorder(vit) as rec_fp, AttentionRecorder(q) as rec_q:
        vit(x)
        q(x)
    assert [r.name for r in rec_q.records] == ['blocks.0.attn', 'blocks.1.attn']
    for fp, qt in zip(rec_fp.records, rec_q.records):
        assert qt.scores.shape == fp.scores.shape == (4, 2, 17, 17)
        assert (qt.scores - fp.scores).abs().max() > 1e-3  # from quantized q and k


def test_mmdet_swin_backbone_placement_and_round_trip():
    """The target use: an OpenMMLab Swin backbone (mmcv WindowMSA in ShiftWindowMSA)."""
    from mmdet.models.backbones import SwinTransformer

    from maskaq_plugin.quant import load_quantized, save_quantized

    def build():
        torch.manual_seed(0)
        swin = SwinTransformer(pretrain_img_size=64, embed_dims=16, depths=(2, 2),
                               num_heads=(1, 2), window_size=4, strides=(4, 2),
                               out_indices=(0, 1), drop_path_rate=0.)
        swin.eval()  # OpenMMLab's train() returns None: not chainable
        make_attention_explicit(swin)
        return swin

    swin, x = build(), torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    q = quantize_model(swin, QuantScheme(4, 4), x)
    infos = quantizer_info(q)
    # 4 blocks x (qkv, proj, fc1, fc2: input + weight; 2 matmuls x 2 operands)
    # + patch-embedding weight + patch merging's reduction (input + weight)
    assert len(infos) == 4 * 12 + 1 + 2
    matmuls = [i for i in infos if i.op_type == 'matmul']
    assert len(matmuls) == 16 and {i.scope for i in matmuls} == {'attn.w_msa'}
    assert [i.kind for i in infos if i.op.startswith('patch_embed')] == ['weight']
    with torch.no_grad():
        ref = q(x)
        restored = load_quantized(build(), save_quantized(q), x)
        restored.eval()
        assert all(torch.equal(a, b) for a, b in zip(restored(x), ref))


# Whole classifiers: NNCF's scopes drop the segments of containers that are never called
# (a ModuleList iterated in forward): both blocks of mmpretrain's ``backbone.layers`` run
# their matmuls as ``backbone/attn/matmul/0..3``. The preflight attributes each operation
# to the module that ran it, recorded during the trace, not to NNCF's scope.

def _trace(model, x):
    """(wrapped copy, NNCF graph, op name -> module path) of ``model`` on ``x``."""
    qmodel, op_modules = wrap_model(copy.deepcopy(model)), {}
    return qmodel, trace_graph(qmodel, x, op_modules), op_modules


def _tiny_mmpretrain_classifier():
    pytest.importorskip('mmpretrain')
    from mmengine.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(tiny_archs.deit_tiny_cls()).eval()
    make_attention_explicit(model)
    return model


class ToyAttention(nn.Module):
    """Multi-head attention: two explicit matmuls, or hidden in SDPA or einsum."""

    def __init__(self, dim=16, num_heads=2, kind='matmul'):
        super().__init__()
        self.num_heads, self.kind = num_heads, kind
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if self.kind == 'sdpa':
            out = F.scaled_dot_product_attention(q, k, v)
        elif self.kind == 'einsum':
            attn = torch.einsum('bhnd,bhmd->bhnm', q, k).softmax(-1)
            out = torch.einsum('bhnm,bhmd->bhnd', attn, v)
        else:
            out = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class ToyBlock(nn.Module):
    def __init__(self, kind='matmul'):
        super().__init__()
        self.norm, self.attn = nn.LayerNorm(16), ToyAttention(kind=kind)

    def forward(self, x):
        return x + self.attn(self.norm(x))


class ToyBackbone(nn.Module):
    """Two ModuleLists with the same child names, iterated in forward (never called)."""

    def __init__(self, enc=('matmul', 'matmul'), dec=('matmul', 'matmul')):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 16, 8, 8)
        self.enc = nn.ModuleList(ToyBlock(k) for k in enc)
        self.dec = nn.ModuleList(ToyBlock(k) for k in dec)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        for block in (*self.enc, *self.dec):
            x = block(x)
        return x


class ToyClassifier(nn.Module):
    def __init__(self, **kinds):
        super().__init__()
        torch.manual_seed(0)
        self.backbone, self.head = ToyBackbone(**kinds), nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.backbone(x).mean(1))


def test_matching_is_by_whole_path_segments():
    """What a tail match of NNCF's scopes confuses, the module paths keep apart."""
    assert _runs_inside('backbone.layers.1.attn', 'backbone.layers.1.attn')
    assert _runs_inside('backbone.layers.1', 'backbone.layers.1.attn.qkv')
    assert _runs_inside('', 'head')  # the root holds everything
    assert not _runs_inside('backbone.layers.1.attn', 'backbone.layers.10.attn')
    assert not _runs_inside('backbone.layers.1', 'backbone.layers.10.attn')
    assert not _runs_inside('backbone.layers.0.attn', 'neck.0.attn')  # same tail '0.attn'
    # a root-level container's '0.attn' (or a root 'attn') is another module, not a tail
    assert not _runs_inside('backbone.layers.0.attn', '0.attn')
    assert not _runs_inside('backbone.layers.0.attn', 'attn.qkv')
    assert not _runs_inside('enc.0.attn', 'dec.0.attn')  # same child names
    assert not _runs_inside('backbone.layers.0.attn', 'backbone.layers.0')  # the parent


def test_whole_mmpretrain_classifier_hides_no_attention():
    model = _tiny_mmpretrain_classifier()
    qmodel, graph, op_modules = _trace(model, torch.randn(2, 3, 64, 64))
    matmuls = {op: path for op, path in op_modules.items() if '/matmul/' in op}
    # measured: NNCF drops backbone.layers.<i>; the recorded modules keep it
    assert matmuls == {'backbone/attn/matmul/0': 'backbone.layers.0.attn',
                       'backbone/attn/matmul/1': 'backbone.layers.0.attn',
                       'backbone/attn/matmul/2': 'backbone.layers.1.attn',
                       'backbone/attn/matmul/3': 'backbone.layers.1.attn'}
    assert find_hidden_attention(qmodel, graph, op_modules) == []


def test_whole_mmpretrain_classifier_with_a_fused_attention_is_refused():
    model = _tiny_mmpretrain_classifier()
    del model.backbone.layers[1].attn.forward  # back to mmpretrain's own (fused) forward
    qmodel, graph, op_modules = _trace(model, torch.randn(2, 3, 64, 64))
    assert find_hidden_attention(qmodel, graph, op_modules) == [
        ('backbone.layers.1.attn', 'MultiheadAttention')]


@pytest.mark.parametrize('kind', ['sdpa', 'einsum'])
def test_hidden_attention_is_found_in_a_module_list_of_a_classifier(kind):
    x = images(2)
    qmodel, graph, op_modules = _trace(ToyClassifier(), x)
    assert find_hidden_attention(qmodel, graph, op_modules) == []
    # the hidden one sits in 'dec', after three explicit attentions with the same scope
    # ('backbone/attn') and the same child names ('0.attn', '1.attn') in 'enc'
    qmodel, graph, op_modules = _trace(ToyClassifier(dec=('matmul', kind)), x)
    assert {op_modules[op] for op in op_modules if '/matmul/' in op} == {
        'backbone.enc.0.attn', 'backbone.enc.1.attn', 'backbone.dec.0.attn'}
    assert find_hidden_attention(qmodel, graph, op_modules) == [
        ('backbone.dec.1.attn', 'ToyAttention')]
    with pytest.raises(QuantizationTraceError, match=r'backbone\.dec\.1\.attn \(ToyAttention\)'):
        quantize_model(ToyClassifier(dec=('matmul', kind)), QuantScheme(), x)


def test_hidden_attention_needs_the_recorded_modules():
    from nncf.torch.function_hook.hook_executor_mode import FunctionHookMode
    naming = FunctionHookMode.get_next_op_call_name
    qmodel, graph, _ = _trace(ToyClassifier(), images(2))
    assert FunctionHookMode.get_next_op_call_name is naming  # NNCF restored after a trace
    with pytest.raises(ValueError, match=r"'backbone/attn/matmul/0'.*op_modules"):
        find_hidden_attention(qmodel, graph, {})


def test_quantize_data_free_takes_a_whole_mmpretrain_classifier():
    from maskaq_plugin import quantize_data_free
    model = _tiny_mmpretrain_classifier()
    student = quantize_data_free(
        model, input_size=(3, 64, 64), num_classes=tiny_archs.CLS_CLASSES, w_bits=4, a_bits=8,
        mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], method='noise',
        num_samples=4, synthesis_iters=1, batch_size=2, epochs=1, seed=0, progress=False)
    sites = _sites(student)
    # both attention matmuls (q @ kᵀ, attn @ v) of both blocks, both operands, 8 bits
    matmuls = {(op, port): kind for (op, port), kind in sites.items() if '/matmul/' in op}
    assert matmuls == {(f'backbone/attn/matmul/{m}', p): 'activation'
                       for m in range(4) for p in (0, 1)}
    assert {i.num_bits for i in quantizer_info(student) if i.op_type == 'matmul'} == {8}
