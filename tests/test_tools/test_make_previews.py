"""tools/make_previews.py: the figure's size, and the tint only on F's informative tokens."""
import numpy as np
from PIL import Image

from .conftest import load_tool


def test_cls_figure_tints_only_the_informative_tokens(tmp_path):
    tool = load_tool('make_previews')
    out = tool.main(['--models', 'cls', '--iters', '2', '--num', '4', '--out-dir',
                     str(tmp_path), '--device', 'cpu'])['cls']
    image = np.asarray(Image.open(tmp_path / 'previews_digits_cls.png').convert('RGB'))
    # 4 tiles of two 128 px panels on one line; title + 2 blocks (MaskAQ, PSAQ-ViT)
    assert image.shape == (352, 1052, 3) == out['shape']
    assert len(out['placed']) == 8
    side, grid = tool.PANEL, 32 // 4  # ViT: 32 px input, 4 px patches -> 8 x 8 tokens
    cell = side // grid
    for p in out['placed']:
        (y0, x0), (y1, x1) = p['raw'], p['tinted']
        raw = image[y0:y0 + side, x0:x0 + side].astype(int)
        tinted = image[y1:y1 + side, x1:x1 + side].astype(int)
        changed = (raw != tinted).any(-1)
        assert not (changed & ~p['mask']).any(), 'tint outside the mask'
        tokens = p['mask'].reshape(grid, cell, grid, cell).all((1, 3))
        assert tokens.sum() == int(0.1 * grid * grid)  # top 10 % of 64 patch keys: 6
        assert (p['mask'].reshape(grid, cell, grid, cell).any((1, 3)) == tokens).all()
        # every masked token is visibly tinted (redder than the plain image)
        red = (tinted[..., 0] - raw[..., 0]).reshape(grid, cell, grid, cell).mean((1, 3))
        assert (red[tokens] > 0).all()
