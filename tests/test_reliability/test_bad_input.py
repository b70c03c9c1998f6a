"""Bad input rejected before heavy work, with the value and the fix in the message: a
truncated or missing teacher checkpoint, an input size the backbone cannot take, and a
scheme that quantizes nothing."""
import doctest
import importlib.util
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from torch import nn

import maskaq_plugin  # noqa: F401  (registers the plugin)
from maskaq_plugin.synthesis import shards
from maskaq_plugin.models.architecture import load_state_dict_strict
from maskaq_plugin.quant import (InputSizeError, NothingToQuantizeError,
                                 QuantizationTraceError, QuantScheme, quantize_model,
                                 quantizer_info)
from maskaq_plugin.utils import CheckpointFileError, checkpoint_file, setup_launcher
from run_helpers import DET, ROOT, TEACHER, need_teacher

PVT = osp.join(ROOT, 'configs/mmdet/maskaq_retinanet_pvtv2-b0_fpn_1x_coco_w4a8.py')


def _train_tool():
    spec = importlib.util.spec_from_file_location('tools_train',
                                                  osp.join(ROOT, 'tools', 'train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _half(src, dst):
    with open(src, 'rb') as f:
        data = f.read()
    with open(dst, 'wb') as f:
        f.write(data[:len(data) // 2])
    return str(dst)


@pytest.fixture
def fp_checkpoint(tmp_path):
    """A real torch.save checkpoint of a small model, and the model."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 30 * 30, 4))
    path = str(tmp_path / 'fp.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(note='fp')), path)
    return path, model


# ------------------------------------------------------------------ checkpoint files
def test_truncated_checkpoint_is_named_with_the_fix(fp_checkpoint, tmp_path):
    path, model = fp_checkpoint
    cut = _half(path, tmp_path / 'cut.pth')
    with pytest.raises(CheckpointFileError) as err:
        load_state_dict_strict(model, cut)
    msg = str(err.value)
    assert repr(cut) in msg and 'truncated' in msg and 'Re-download' in msg
    assert 'PytorchStreamReader' not in msg  # torch's own wording is not what users see
    load_state_dict_strict(model, path)  # the intact file still loads


def test_missing_empty_foreign_and_bitflipped_files(fp_checkpoint, tmp_path):
    path, model = fp_checkpoint
    missing = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match=re.escape(repr(missing)) + ' does not exist'):
        load_state_dict_strict(model, missing)
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(CheckpointFileError, match=r'is empty \(0 bytes\)'):
        load_state_dict_strict(model, str(empty))
    page = tmp_path / 'page.pth'  # what a failed download often saves
    page.write_bytes(b'<!DOCTYPE html><title>404</title>')
    with pytest.raises(CheckpointFileError, match="not a PyTorch checkpoint.*<!DOCTYPE"):
        load_state_dict_strict(model, str(page))
    # One flipped byte inside a tensor: torch itself loads it without complaint.
    data = bytearray(open(path, 'rb').read())
    data[len(data) // 2] ^= 0xFF
    flipped = tmp_path / 'flipped.pth'
    flipped.write_bytes(bytes(data))
    assert not torch.equal(torch.load(str(flipped))['state_dict']['2.weight'],
                           model.state_dict()['2.weight'])
    with pytest.raises(CheckpointFileError, match=r"member '.*data/\d+' does not match the "
                       'CRC-32'):
        load_state_dict_strict(model, str(flipped))


def test_legacy_format_cut_short_gets_our_message(fp_checkpoint, tmp_path):
    path, model = fp_checkpoint
    legacy = str(tmp_path / 'legacy.pth')
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    cut = _half(legacy, tmp_path / 'legacy_cut.pth')
    with pytest.raises(CheckpointFileError, match='truncated or corrupt: torch could not '
                       'read it'):
        load_state_dict_strict(model, cut)


def test_train_tool_rejects_bad_checkpoints_before_building_anything(tmp_path):
    need_teacher()
    train = _train_tool()
    cut = _half(TEACHER, tmp_path / 'teacher_cut.pth')
    work = tmp_path / 'work'
    with pytest.raises(CheckpointFileError, match=re.escape(repr(cut)) + ' is truncated'):
        train.main([DET, '--work-dir', str(work), '--cfg-options',
                    f'model.teacher_checkpoint={cut}'])
    assert not work.exists()  # no Runner: no work dir, no log, no model built
    # --resume picks the latest checkpoint of the work dir: a truncated one is named too.
    work.mkdir()
    latest = _half(TEACHER, work / 'epoch_2.pth')
    (work / 'last_checkpoint').write_text(latest)
    with pytest.raises(CheckpointFileError, match=r'resume from.*truncated.*--resume .*'
                       r'epoch_<N>\.pth'):
        train.main([DET, '--work-dir', str(work), '--resume'])
    assert sorted(p.name for p in work.iterdir()) == ['epoch_2.pth', 'last_checkpoint']
    # MMEngine deletes the oldest checkpoint before writing the next one in place: with
    # max_keep_ckpts=1 a kill in between leaves a pointer to a deleted file.
    (work / 'last_checkpoint').write_text(str(work / 'epoch_1.pth'))
    with pytest.raises(FileNotFoundError, match=r"epoch_1\.pth' does not exist.*Resume "
                       r'from an older one'):
        train.main([DET, '--work-dir', str(work), '--resume'])


def test_algorithm_stops_at_the_teacher_file_before_quantizing(tmp_path, monkeypatch):
    need_teacher()
    cfg = Config.fromfile(DET)
    cfg.model.teacher_checkpoint = _half(TEACHER, tmp_path / 'cut.pth')

    def never(*args, **kwargs):
        raise AssertionError('quantize_model ran before the checkpoint was checked')
    monkeypatch.setattr('maskaq_plugin.quant.quantize.quantize_model', never)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        with pytest.raises(CheckpointFileError, match='teacher_checkpoint.*truncated'):
            MODELS.build(cfg.model)


# ------------------------------------------------------------------------ input size
def test_input_size_the_vit_cannot_take(monkeypatch):
    from timm.models.vision_transformer import VisionTransformer
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                            num_classes=10).eval()

    def never(*args, **kwargs):
        raise AssertionError('NNCF wrapped the model before the input was checked')
    monkeypatch.setattr('maskaq_plugin.quant.quantize.wrap_model', never)
    with pytest.raises(InputSizeError) as err:
        quantize_model(vit, QuantScheme(), torch.zeros(1, 3, 48, 48))
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, QuantizationTraceError)
    assert 'VisionTransformer cannot run on an input of shape (1, 3, 48, 48) (input_size ' \
           '(3, 48, 48))' in msg
    assert "module 'patch_embed' (PatchEmbed)" in msg
    assert "AssertionError: Input height (48) doesn't match model (32)" in msg
    assert 'e.g. (3, 32, 32)' in msg and 'built for img_size (32, 32)' in msg


def test_input_size_the_pvt_backbone_cannot_take(monkeypatch):
    cfg = Config.fromfile(PVT)
    cfg.model.update(teacher_checkpoint=None, allow_random_teacher=True,
                     input_size=(3, 24, 24))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        with pytest.raises(ValueError) as err:
            MODELS.build(cfg.model)
        msg = str(err.value)
        assert 'PyramidVisionTransformerV2 cannot run on an input of shape (1, 3, 24, 24) ' \
               '(input_size (3, 24, 24))' in msg
        assert "Kernel size can't be greater than actual input size" in msg
        suggested = tuple(int(v) for v in re.search(r'e\.g\. \((\d+), (\d+), (\d+)\)',
                                                    msg).groups())
        assert suggested == (3, 32, 32)
        backbone = MODELS.build(cfg.model.architecture.backbone).eval()
    with torch.no_grad():  # the suggested size does run
        assert len(backbone(torch.zeros(1, *suggested))) == 4


# -------------------------------------------------------------------- nothing quantized
class EinsumMixer(nn.Module):
    """Token mixing with einsum only: no Linear, no Conv, no matmul for NNCF to see."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Parameter(torch.randn(3, 8))
        self.norm = nn.LayerNorm(8)

    def forward(self, x):  # (B, 3, H, W) -> (B, H, W, 8)
        return self.norm(torch.einsum('bchw,cd->bhwd', x, self.proj))


class MatmulAttention(nn.Module):
    """Projections and attention written as ``@``: only matmuls."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Parameter(torch.randn(3, 8))

    def forward(self, x):
        tokens = x.flatten(2).transpose(1, 2) @ self.proj  # (B, N, 8)
        attn = (tokens @ tokens.transpose(1, 2)).softmax(-1)  # (B, N, N)
        return attn @ tokens


def test_a_scheme_that_quantizes_nothing_is_refused():
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(NothingToQuantizeError) as err:
        quantize_model(EinsumMixer(), QuantScheme(4, 4), x)
    msg = str(err.value)
    assert 'W4A4 places no quantizer in EinsumMixer' in msg
    assert 'no Linear / Conv' in msg and 'einsum x1' in msg
    assert 'fine-tune a full-precision model' in msg
    with pytest.raises(NothingToQuantizeError, match='MatmulAttention: .*its 3 matmul\\(s\\) '
                       'are excluded by quantize_attention_matmuls=False'):
        quantize_model(MatmulAttention(), QuantScheme(quantize_attention_matmuls=False), x)
    q = quantize_model(MatmulAttention(), QuantScheme(), x)  # the matmuls, quantized
    assert len(quantizer_info(q)) == 6


# ------------------------------------------------------------------ launch settings
@pytest.mark.parametrize('timeout', [-5, 0, '30m', True])
def test_dist_timeout_must_be_positive_seconds(monkeypatch, timeout):
    for key, value in dict(RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT='29533').items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr('torch.cuda.is_available', lambda: False)
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(timeout=timeout))))
    with pytest.raises(ValueError, match=re.escape(f'got {timeout!r}') + '.*timeout=300'):
        setup_launcher(cfg)


def test_docstring_examples_run():
    for module in (checkpoint_file, shards):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__

