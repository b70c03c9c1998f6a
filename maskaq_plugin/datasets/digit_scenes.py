"""Generate *digit scenes*: real handwritten digits on textured canvases.

The digits are the 5000 20x20 samples of OpenCV's ``digits.png`` (Debian package
``opencv-doc``; a 2000x1000 grid, 500 samples per class in blocks of five rows). Each scene
pastes 1-4 of them, thickened by one pixel (2x2 dilation: the ~2 px pen strokes would
otherwise be thinner than one stride-4 feature), scaled 1.5-3x and coloured, on a
coloured texture (smooth noise, a gradient or stripes). The same scenes are written twice:

* COCO instances (mmdet ``CocoDataset``)::

    <out>/coco/{train,val}/NNNN.png
    <out>/coco/annotations/instances_{train,val}.json   # categories "0".."9" (ids 1..10),
                                                         # bbox xywh, RLE of the visible mask
* ADE20K layout (mmseg ``BaseSegDataset``, ``img_suffix='.png'``, ``reduce_zero_label=False``)::

    <out>/ade/images/{training,validation}/NNNN.png
    <out>/ade/annotations/{training,validation}/NNNN.png  # uint8: 0 background, 1 + digit

  mmseg's ``ADE20KDataset`` itself refuses class names outside its 150 ADE classes, hence
  ``BaseSegDataset`` with ``metainfo=dict(classes=SEG_CLASSES)``.

Train and val scenes draw on disjoint digit samples (columns 0-79 / 80-99 of the grid).
Scene ``i`` of a split depends only on ``(seed, split, i)``: the output is byte-identical
from run to run, and a small set is a prefix of a larger one.

The command line is ``tools/make_digit_scenes.py``; tests, tools and benchmarks import this
module (``from maskaq_plugin.datasets import digit_scenes``).
"""
import gzip
import json
import os
import os.path as osp

import cv2
import numpy as np
from pycocotools import mask as mask_utils

try:
    from tqdm import tqdm
except ImportError:  # progress is cosmetic
    def tqdm(iterable, **kwargs):
        return iterable

DIGITS_PNG_CANDIDATES = (
    '/usr/share/doc/opencv-doc/examples/data/digits.png',
    '/usr/share/doc/opencv-doc/examples/data/digits.png.gz',
    '/usr/share/opencv4/samples/data/digits.png',
    '/usr/local/share/opencv4/samples/data/digits.png',
)
DET_CLASSES = tuple(str(d) for d in range(10))
SEG_CLASSES = ('background', ) + DET_CLASSES
SEG_PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
               [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
               [210, 245, 60], [250, 190, 212]]
SPLITS = {'train': ('train', 'training', 0, range(0, 80)),
          'val': ('val', 'validation', 1, range(80, 100))}
FORMAT_VERSION = 2
BOLD_KERNEL = np.ones((2, 2), np.uint8)  # dilation applied to each 20x20 digit
MAX_BOX_OVERLAP = 0.25   # box intersection / smaller box area allowed between two digits
MAX_MASK_OVERLAP = 0.10  # mask intersection / smaller mask area allowed between two digits


def find_digits_png(path=None):
    """Return the path of OpenCV's ``digits.png`` (or ``.png.gz``) or raise a clear error."""
    candidates = [path] if path else [os.environ.get('DIGITS_PNG')] + list(DIGITS_PNG_CANDIDATES)
    for candidate in candidates:
        if candidate and osp.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f'OpenCV digits.png not found (looked at {[c for c in candidates if c]}). Install it '
        'with `apt-get install -y opencv-doc` (Debian/Ubuntu), or pass --digits PATH / set '
        'DIGITS_PNG to a copy of opencv/samples/data/digits.png.')


def load_digit_cells(path):
    """Load ``digits.png`` as an array of shape (10, 500, 20, 20) uint8, white on black."""
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        img = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None or img.shape != (1000, 2000):
        raise ValueError(f'{path} is not the 2000x1000 OpenCV digits grid '
                         f'(got shape {None if img is None else img.shape})')
    cells = img.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3)  # (row, col, 20, 20)
    return np.ascontiguousarray(cells.reshape(10, 500, 20, 20))  # class k = rows 5k..5k+4


def make_texture(rng, size, colours):
    """A (size, size, 3) float32 canvas blending two colours by a smooth texture field."""
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:  # smooth noise
        grid = rng.random((rng.integers(3, 8), ) * 2).astype(np.float32)
        t = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:  # linear gradient
        angle = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(angle) + yy * np.sin(angle)
    else:  # stripes
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 32) / size
        t = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return colours[0] * (1 - t[..., None]) + colours[1] * t[..., None]


def _box_of(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def _overlaps(box, mask, instances):
    """True when the new digit overlaps any placed digit more than allowed."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    for other_box, other_mask in ((b, m) for _, m, b in instances):
        iw = min(box[2], other_box[2]) - max(box[0], other_box[0])
        ih = min(box[3], other_box[3]) - max(box[1], other_box[1])
        other_area = (other_box[2] - other_box[0]) * (other_box[3] - other_box[1])
        if iw > 0 and ih > 0 and iw * ih > MAX_BOX_OVERLAP * min(area, other_area):
            return True
        inter = np.count_nonzero(mask & other_mask)
        if inter > MAX_MASK_OVERLAP * min(mask.sum(), other_mask.sum()):
            return True
    return False


def render_scene(rng, cells, columns, size):
    """Render one scene.

    Args:
        rng (np.random.Generator): the scene's generator.
        cells (np.ndarray): (10, 500, 20, 20) digit samples.
        columns (range): grid columns this split may use.
        size (int): canvas side in pixels.

    Returns:
        tuple: image (size, size, 3) uint8 BGR, seg map (size, size) uint8
        (0 background, 1 + digit) and a list of (digit, visible mask (size, size) bool).
    """
    dark_digits = rng.random() < 0.5  # light canvas + dark digits, or the reverse
    lo, hi = (150, 256) if dark_digits else (0, 110)
    img = make_texture(rng, size, rng.integers(lo, hi, (2, 3)).astype(np.float32))
    seg = np.zeros((size, size), np.uint8)
    instances = []  # (digit, mask, box)
    for _ in range(rng.integers(1, 5)):
        digit = int(rng.integers(10))
        cell = cv2.dilate(cells[digit, rng.integers(5) * 100 + rng.choice(columns)],
                          BOLD_KERNEL)
        side = min(int(round(20 * rng.uniform(1.5, 3.0))), size // 2)
        alpha = cv2.resize(cell, (side, side), interpolation=cv2.INTER_LINEAR)
        alpha = alpha.astype(np.float32) / 255
        for _attempt in range(20):
            x0, y0 = rng.integers(0, size - side + 1, 2)
            full_alpha = np.zeros((size, size), np.float32)
            full_alpha[y0:y0 + side, x0:x0 + side] = alpha
            mask = full_alpha >= 0.5
            box = _box_of(mask)
            if not _overlaps(box, mask, instances):
                break
        else:
            continue  # no room left for this digit
        colour = rng.integers(*((0, 90) if dark_digits else (170, 256)), 3)
        img = img * (1 - full_alpha[..., None]) + colour * full_alpha[..., None]
        instances = [(d, m & ~mask, _box_of(m & ~mask)) for d, m, _ in instances]
        instances.append((digit, mask, box))
        seg[mask] = digit + 1
    img = img + rng.normal(0, 4, img.shape)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return img, seg, [(d, m) for d, m, _ in instances]


def _write_png(path, array):
    ok, buf = cv2.imencode('.png', array)
    assert ok, path
    with open(path, 'wb') as f:
        f.write(buf.tobytes())


def coco_annotation(ann_id, image_id, digit, mask):
    """COCO instance record: bbox xywh, compressed RLE, area and category id = digit + 1."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    rle['counts'] = rle['counts'].decode('ascii')
    return dict(id=ann_id, image_id=image_id, category_id=digit + 1, bbox=bbox,
                area=float(mask_utils.area(rle)), segmentation=rle, iscrowd=0)


def generate(out_dir, num_train=400, num_val=100, size=128, seed=0, digits_path=None,
             progress=True):
    """Write the COCO and ADE20K-style digit-scene sets under ``out_dir``.

    Returns:
        dict: the meta information also written to ``<out_dir>/meta.json``.
    """
    assert size >= 64, f'--size must be >= 64 (got {size})'
    cells = load_digit_cells(find_digits_png(digits_path))
    counts = {'train': num_train, 'val': num_val}
    for split, (coco_name, ade_name, split_id, columns) in SPLITS.items():
        dirs = [osp.join(out_dir, 'coco', coco_name), osp.join(out_dir, 'coco', 'annotations'),
                osp.join(out_dir, 'ade', 'images', ade_name),
                osp.join(out_dir, 'ade', 'annotations', ade_name)]
        for d in dirs:
            os.makedirs(d, exist_ok=True)
        images, annotations = [], []
        width = max(4, len(str(counts[split] - 1)))
        for i in tqdm(range(counts[split]), desc=f'digit scenes {split}', disable=not progress):
            rng = np.random.default_rng([seed, split_id, i])
            img, seg, instances = render_scene(rng, cells, columns, size)
            name = f'{i:0{width}d}.png'
            _write_png(osp.join(dirs[0], name), img)
            _write_png(osp.join(dirs[2], name), img)
            _write_png(osp.join(dirs[3], name), seg)
            images.append(dict(id=i + 1, file_name=name, width=size, height=size))
            for digit, mask in instances:
                annotations.append(coco_annotation(len(annotations) + 1, i + 1, digit, mask))
        coco = dict(info=dict(description=f'digit scenes {split}, seed {seed}'), licenses=[],
                    images=images, annotations=annotations,
                    categories=[dict(id=d + 1, name=str(d), supercategory='digit')
                                for d in range(10)])
        with open(osp.join(dirs[1], f'instances_{coco_name}.json'), 'w') as f:
            json.dump(coco, f)
    meta = dict(format_version=FORMAT_VERSION, seed=seed, size=size, num_train=num_train,
                num_val=num_val, det_classes=list(DET_CLASSES), seg_classes=list(SEG_CLASSES))
    with open(osp.join(out_dir, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    return meta


def up_to_date(out_dir, num_train, num_val, size, seed):
    """``<out_dir>/meta.json`` describes these scenes and every file it lists exists."""
    try:
        with open(osp.join(out_dir, 'meta.json')) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    wanted = dict(format_version=FORMAT_VERSION, seed=seed, size=size, num_train=num_train,
                  num_val=num_val)
    if any(meta.get(k) != v for k, v in wanted.items()):
        return False
    for split, (coco_name, ade_name, _, _) in SPLITS.items():
        n = num_train if split == 'train' else num_val
        last = f'{n - 1:04d}.png'
        paths = [osp.join(out_dir, 'coco', coco_name, last),
                 osp.join(out_dir, 'coco', 'annotations', f'instances_{coco_name}.json'),
                 osp.join(out_dir, 'ade', 'images', ade_name, last),
                 osp.join(out_dir, 'ade', 'annotations', ade_name, last)]
        if not all(osp.isfile(p) for p in paths):
            return False
    return True
