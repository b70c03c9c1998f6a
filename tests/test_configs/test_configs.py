"""Every config loads offline; MaskAQ configs carry the method's defaults and real URLs;
the full-size architectures build with random weights and have supported attention; a leaf
config (outside configs/_base_/) states only what differs from its bases."""
import glob
import os.path as osp

import pytest
import yaml
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

import maskaq_plugin  # noqa: F401
from maskaq_plugin.attention import make_attention_explicit

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ALL_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True))
LEAF_CONFIGS = [c for c in ALL_CONFIGS if '_base_' not in c]
MASKAQ_CONFIGS = [c for c in LEAF_CONFIGS if osp.basename(c).startswith('maskaq_')]
FULL_SIZE = [c for c in MASKAQ_CONFIGS if 'digits' not in c]
TINY = [c for c in MASKAQ_CONFIGS if 'digits' in c]
TASK_OF_SCOPE = dict(mmdet='det', mmseg='seg', mmpretrain='cls')


def _name(path):
    return osp.relpath(path, ROOT)


def _code_lines(path):
    """The non-blank lines of a config that are not comments."""
    with open(path) as f:
        return [line for line in f if line.strip() and not line.lstrip().startswith('#')]


def _metafile_weights(scope):
    """Every ``Weights:`` URL of the installed library's model zoo metafiles."""
    pkg = __import__(scope)
    urls = set()
    pattern = osp.join(osp.dirname(pkg.__file__), '.mim', 'configs', '*', 'metafile.y*ml')
    for path in glob.glob(pattern):
        with open(path) as f:
            meta = yaml.safe_load(f)
        models = meta.get('Models', []) if isinstance(meta, dict) else meta
        for m in models or []:
            weights = m.get('Weights') or []
            urls.update([weights] if isinstance(weights, str) else weights)
    return urls


def test_config_set_is_complete():
    names = {osp.basename(c) for c in MASKAQ_CONFIGS}
    assert {
        'maskaq_mask-rcnn_swin-t-p4-w7_fpn_1x_coco_w4a8.py',
        'maskaq_mask-rcnn_swin-t-p4-w7_fpn_1x_coco_w4a4.py',
        'maskaq_retinanet_pvtv2-b0_fpn_1x_coco_w4a8.py',
        'maskaq_swin-tiny-patch4-window7_upernet_ade20k-512x512_w4a8.py',
        'maskaq_swin-tiny-patch4-window7_upernet_ade20k-512x512_w4a4.py',
        'maskaq_segformer_mit-b0_ade20k-512x512_w4a8.py',
        'maskaq_deit-small_in1k_w4a4.py',
        'maskaq_swin-tiny_in1k_w4a4.py',
        'maskaq_maskrcnn_swin-tiny_digits_w4a8.py',
        'maskaq_maskrcnn_swin-tiny_digits_w4a4.py',
        'maskaq_upernet_swin-tiny_digits_w4a8.py',
        'maskaq_upernet_swin-tiny_digits_w4a4.py',
    } <= names


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_name)
def test_every_config_loads(path):
    cfg = Config.fromfile(path)
    assert len(cfg.keys()) > 0


@pytest.mark.parametrize('path', LEAF_CONFIGS, ids=_name)
def test_leaf_config_states_only_what_differs(path):
    """Shared parts live in configs/_base_/ (STYLE.md 12), so that the configs stay in sync."""
    lines = _code_lines(path)
    assert len(lines) <= 20, (f'{_name(path)} has {len(lines)} lines of code (limit 20): '
                              'move what it shares with other configs into configs/_base_/')


def test_code_lines_skip_blanks_and_comments(tmp_path):
    path = tmp_path / 'cfg.py'
    path.write_text("# head\n_base_ = ['a.py']\n\nmodel = dict(\n    # why\n    a_bits=4)  # x\n")
    assert _code_lines(str(path)) == ["_base_ = ['a.py']\n", 'model = dict(\n',
                                      '    a_bits=4)  # x\n']


@pytest.mark.parametrize('path', [c for c in MASKAQ_CONFIGS if c.endswith('_w4a4.py')
                                  and osp.isfile(c.replace('_w4a4.py', '_w4a8.py'))], ids=_name)
def test_w4a4_config_differs_from_its_w4a8_twin_only_in_the_bits(path):
    twin = path.replace('_w4a4.py', '_w4a8.py')
    low, high = Config.fromfile(path).to_dict(), Config.fromfile(twin).to_dict()
    assert (low['model'].pop('a_bits'), high['model'].pop('a_bits')) == (4, 8)
    assert low == high


@pytest.mark.parametrize('path', MASKAQ_CONFIGS, ids=_name)
def test_maskaq_config_contract(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['maskaq_plugin'], allow_failed_imports=False)
    scope = cfg.default_scope
    model = cfg.model
    assert model.type == 'MaskAQAlgorithm'
    assert MODELS.get(f'{scope}.{model.architecture.type}') is not None
    bits = osp.splitext(path)[0].rsplit('_', 1)[1]  # e.g. w4a8
    assert (model.w_bits, model.a_bits) == (int(bits[1]), int(bits[3]))
    assert len(model.input_size) == 3 and model.input_size[0] == 3
    assert set(model.kd) == {'feat', 'task', 'mssim', 'temperature'}
    assert model.kd.mssim == 10.0  # lambda of L_mssim
    assert model.kd.temperature == (5.0 if scope == 'mmpretrain' else 1.0)

    dataset = cfg.train_dataloader.dataset
    assert dataset.type == 'MaskAQSyntheticDataset'
    assert dataset.task == TASK_OF_SCOPE[scope]
    optim = cfg.optim_wrapper.optimizer
    assert (optim.type, optim.lr, optim.momentum, optim.nesterov) == ('SGD', 1e-3, 0.9, True)
    # Segmentation clips the gradient norm (ours: docs/benchmarks.md, "Accuracy (dense tasks)");
    # detection and classification keep the paper's plain SGD.
    clip = cfg.optim_wrapper.get('clip_grad')
    assert clip == (dict(max_norm=5.0, norm_type=2) if scope == 'mmseg' else None)
    max_epochs = cfg.train_cfg.max_epochs
    assert cfg.train_cfg.type == 'EpochBasedTrainLoop'
    [cosine] = cfg.param_scheduler
    assert cosine.type == 'CosineAnnealingLR' and cosine.eta_min_ratio == 0.01
    assert cosine.T_max == cosine.end == max_epochs
    assert cfg.default_hooks.checkpoint.by_epoch
    assert cfg.get('log_processor', {}).get('by_epoch', True)
    hooks = {h.type: h for h in cfg.custom_hooks}
    assert set(hooks) == {'SampleRefreshHook', 'MaskAQExportHook'}
    refresh = hooks['SampleRefreshHook']
    assert refresh.by_epoch and refresh.interval < max_epochs
    assert refresh.synthesis.lr == 0.1
    assert dict(refresh.synthesis.loss_weights) == dict(
        head=1.0, sem=1.0, tv=2.5e-5, ent=1.0, mad=0.1)
    # Nothing of the upstream training set or optimiser survives the _delete_ merges.
    for key in ('train_dataloader', 'optim_wrapper', 'train_cfg'):
        assert '_delete_' not in str(cfg[key]), key
    assert 'paramwise_cfg' not in cfg.optim_wrapper and 'pipeline' not in dataset


@pytest.mark.parametrize('path', FULL_SIZE, ids=_name)
def test_full_size_config_uses_the_paper_schedule_and_zoo_teacher(path):
    cfg = Config.fromfile(path)
    assert cfg.train_cfg.max_epochs == 100
    assert cfg.train_dataloader.batch_size == 16
    refresh = {h.type: h for h in cfg.custom_hooks}['SampleRefreshHook']
    assert refresh.interval == 30 and refresh.synthesis.iters == 2000
    assert cfg.model.teacher_checkpoint in _metafile_weights(cfg.default_scope)


@pytest.mark.parametrize('path', TINY, ids=_name)
def test_tiny_config_points_at_shipped_teacher(path):
    cfg = Config.fromfile(path)
    assert cfg.model.teacher_checkpoint.startswith('checkpoints/')
    assert cfg.model.input_size == (3, 128, 128)
    assert cfg.train_dataloader.dataset.metainfo.classes[-1] == '9'


@pytest.mark.parametrize('path', FULL_SIZE, ids=_name)
def test_full_size_architecture_builds_offline_with_supported_attention(path):
    """Random init only: building never downloads (init_weights is not called)."""
    cfg = Config.fromfile(path)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model.architecture)
    layers = make_attention_explicit(model.backbone)
    expected = dict(SwinTransformer=12, PyramidVisionTransformerV2=8, MixVisionTransformer=8,
                    VisionTransformer=12)
    assert len(layers) == expected[type(model.backbone).__name__]


def test_one_full_size_algorithm_builds_with_random_teacher():
    """The whole MaskAQAlgorithm of SegFormer MiT-B0 at 512x512 (about 20 s on CPU)."""
    from maskaq_plugin.quant import quantizer_bits
    cfg = Config.fromfile(osp.join(ROOT, 'configs/mmseg/'
                                   'maskaq_segformer_mit-b0_ade20k-512x512_w4a8.py'))
    cfg.model.update(teacher_checkpoint=None, allow_random_teacher=True)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        algo = MODELS.build(cfg.model)
    assert algo.task == 'seg' and algo.input_size == (3, 512, 512)
    bits = quantizer_bits(algo.student_backbone_quantized)
    assert set(bits.values()) == {('weight', 4), ('activation', 8)}
    assert not any(p.requires_grad for p in algo.teacher.parameters())
