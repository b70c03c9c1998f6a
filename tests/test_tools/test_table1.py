"""tools/table1.py on a fake ImageNet folder: our top-1 beside the paper's, cells reused."""
import copy
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import ROOT, load_tool

sys.path.insert(0, ROOT)  # the benchmarks package

WNIDS = ('n01440764', 'n01443537', 'n01484850', 'n01491361')
TINY = ['--bits', 'W4A8', '--num-samples', '1', '--synthesis-iters', '1', '--epochs', '1',
        '--batch-size', '1', '--max-val-images', '8', '--workers', '0', '--device', 'cpu']


def _direct_top1(model, val_dir):
    """timm's eval transform on the folder, independent of benchmarks/."""
    from timm.data import create_transform, resolve_data_config
    from torchvision.datasets import ImageFolder
    transform = create_transform(**resolve_data_config({}, model=model), is_training=False)
    dataset = ImageFolder(str(val_dir), transform=transform)
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(-1) for x, _ in
                          torch.utils.data.DataLoader(dataset, batch_size=4)])
    return 100.0 * (pred == torch.tensor(dataset.targets)).float().mean().item()


@pytest.fixture(scope='module')
def fake_imagenet(tmp_path_factory):
    """Random DeiT-T weights (head limited to the 4 classes) and 8 images: one per folder,
    then 4 in the folder of the class the FP model predicts (FP top-1 >= 50 %)."""
    import timm
    from timm.data import create_transform, resolve_data_config
    root = tmp_path_factory.mktemp('table1')
    torch.manual_seed(0)
    model = timm.create_model('deit_tiny_patch16_224', pretrained=False).eval()
    with torch.no_grad():
        model.head.bias[len(WNIDS):] = -100.0  # predictions fall on the 4 folders
    torch.save(model.state_dict(), root / 'deit_tiny.pth')
    transform = create_transform(**resolve_data_config({}, model=model), is_training=False)
    rng = np.random.default_rng(0)
    for wnid in WNIDS:
        (root / 'val' / wnid).mkdir(parents=True)
    for i in range(8):
        img = Image.fromarray(rng.integers(0, 256, (60, 72, 3), dtype=np.uint8))
        with torch.no_grad():
            pred = model(transform(img)[None]).argmax().item()
        label = i if i < len(WNIDS) else pred  # every folder holds an image
        img.save(root / 'val' / WNIDS[label] / f'img{i}.png')
    return root, model


def test_table1_tiny_budget_and_resume(fake_imagenet, tmp_path, monkeypatch):
    root, fp_model = fake_imagenet
    tool = load_tool('table1')
    argv = ['--val-dir', str(root / 'val'), '--weights',
            f'deit_tiny_patch16_224={root / "deit_tiny.pth"}', '--work-dir', str(tmp_path),
            '--save', *TINY]
    out = tool.main(argv)
    rows = {(r['setting'], r['method']): r for r in out['rows']}
    fp, q = rows[('FP', 'fp')], rows[('W4A8', 'maskaq')]
    # FP top-1: what timm's own eval transform gives on the same folder
    assert fp['ours'] == [pytest.approx(_direct_top1(fp_model, root / 'val'))]
    assert fp['ours'][0] >= 50 and fp['paper'] == 72.21
    # the student's top-1: that of the saved student, restored and evaluated directly
    from maskaq_plugin.attention import make_attention_explicit
    from maskaq_plugin.quant import load_quantized
    state = torch.load(tmp_path / 'students' / 'deit_tiny_patch16_224_W4A8_maskaq_seed0.pth',
                       weights_only=True)
    explicit = copy.deepcopy(fp_model)
    make_attention_explicit(explicit)
    student = load_quantized(explicit, state, torch.zeros(1, 3, 224, 224)).eval()
    assert 0 <= q['ours'][0] <= 100
    assert q['ours'] == [pytest.approx(_direct_top1(student, root / 'val'))]
    assert q['paper'] == 69.95 and q['delta'] == pytest.approx(q['ours'][0] - 69.95, abs=1e-3)
    # written: markdown and JSON with our figure beside the paper's
    md = (tmp_path / 'table1.md').read_text()
    assert f"| W4A8 | maskaq | {q['ours'][0]:.2f} | 69.95 |" in md
    assert json.loads((tmp_path / 'table1.json').read_text())['rows'] == out['rows']
    # a second call reuses every stored cell: neither quantizes nor evaluates
    import benchmarks.table1 as table1

    def fail(*args, **kwargs):
        raise AssertionError('recomputed a stored cell')

    monkeypatch.setattr(table1, '_quantize', fail)
    monkeypatch.setattr(table1, 'top1', fail)
    assert tool.main(argv)['rows'] == out['rows']


@pytest.mark.parametrize('extra, message', [
    (['--weights', 'deit_tin_patch16_224=w.pth'], "unknown model 'deit_tin_patch16_224'"),
    (['--weights', 'deit_tiny_patch16_224'], 'expected MODEL=PATH'),
    (['--weights', 'deit_tiny_patch16_224=w.pth', '--models', 'deit_small_patch16_224'],
     'no weights for deit_small_patch16_224: pass --weights deit_small_patch16_224=PATH'),
])
def test_table1_argument_errors_name_the_fix(extra, message):
    tool = load_tool('table1')
    with pytest.raises((SystemExit, ValueError), match=message):
        tool.resolve_weights(tool.parse_args(['--val-dir', 'val', *extra]))


def test_table1_missing_files_name_the_fix(fake_imagenet, tmp_path):
    root, _ = fake_imagenet
    tool = load_tool('table1')
    base = ['--work-dir', str(tmp_path), *TINY]
    with pytest.raises(FileNotFoundError, match="weights of deit_tiny_patch16_224: '.*nope.pth' "
                       'does not exist; pass --weights'):
        tool.main(['--val-dir', str(root / 'val'), '--weights',
                   f'deit_tiny_patch16_224={tmp_path / "nope.pth"}', *base])
    with pytest.raises(FileNotFoundError, match="--val-dir '.*no_val' is not a folder"):
        tool.main(['--val-dir', str(tmp_path / 'no_val'), '--weights',
                   f'deit_tiny_patch16_224={root / "deit_tiny.pth"}', *base])


def test_paper_figures_doctest():
    import doctest

    import benchmarks.table1_paper as paper
    assert doctest.testmod(paper).failed == 0 and doctest.testmod(paper).attempted == 3
    # every Table 1 cell is recorded: FP and four MaskAQ rows, two MimiQ rows, 6 models
    assert {len(row) for rows in paper.PAPER_TABLE1.values() for row in rows.values()} == {6}
    assert paper.paper_top1('swin_tiny_patch4_window7_224', 'W3A3', 'maskaq') == 44.98
    assert paper.paper_top1('vit_base_patch16_224', 'W4A4', 'mimiq') == 62.91
