"""Pieces of tools/table1.py: the FP models from local weights and the ImageNet folder.

Models are timm's, built with ``pretrained=False`` and loaded from a local file: a timm
checkpoint (``.safetensors``, or a ``.pth`` holding a state dict, possibly under
``state_dict`` / ``model``) or an OpenMMLab mmpretrain checkpoint (keys ``backbone.…``;
DeiT and Swin-T, whose mmpretrain models exist at 224 px). The evaluation transform is
timm's for the model's ``pretrained_cfg`` (resize by ``crop_pct``, centre crop, its
mean/std), whatever the checkpoint's format.
"""
import importlib
import os
import os.path as osp
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from .table1_paper import MODELS

# timm name -> mmpretrain model name (mmpretrain.get_model), for mmpretrain checkpoints.
MMPRETRAIN_MODELS = {
    'deit_tiny_patch16_224': 'deit-tiny_4xb256_in1k',
    'deit_small_patch16_224': 'deit-small_4xb256_in1k',
    'deit_base_patch16_224': 'deit-base_16xb64_in1k',
    'swin_tiny_patch4_window7_224': 'swin-tiny_16xb64_in1k',
}


def check_model_name(name: str) -> str:
    """``name`` if it is a Table 1 model (timm name, optionally ``.tag``), else raise."""
    if name.split('.')[0] not in MODELS.values():
        raise ValueError(f'unknown model {name!r}: Table 1 has {list(MODELS.values())} '
                         '(timm names; a pretrained tag may follow, e.g. '
                         'vit_base_patch16_224.augreg_in21k_ft_in1k)')
    return name


class MMPretrainLogits(nn.Module):
    """An mmpretrain ``ImageClassifier`` as a plain ``x -> logits`` module."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):  # (B, 3, H, W) normalised -> (B, num_classes)
        # what ``classifier(x, mode='tensor')`` computes; called directly, since NNCF's
        # trace through ``ImageClassifier.forward`` does not see the attention matmuls
        return self.classifier.head(self.classifier.extract_feat(x))


def _read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    from timm.models import load_state_dict

    from maskaq_plugin.utils import check_checkpoint_file, explain_load_error
    if not path.endswith('.safetensors'):
        check_checkpoint_file(path, what=f'weights {path}')
    try:
        return load_state_dict(path, use_ema=False)  # weights_only; unwraps state_dict/model
    except Exception as err:
        explained = explain_load_error(path, err, what=f'weights {path}')
        raise (explained or err) from err


def load_fp_model(name: str, weights: str) -> Tuple[nn.Module, dict]:
    """The FP classifier ``name`` with ``weights`` (eval mode, CPU) and its timm data config.

    Returns:
        tuple: ``(model, data_config)``; ``data_config`` has ``input_size``, ``mean``,
        ``std``, ``crop_pct``, ``interpolation`` (timm's ``resolve_data_config``).
    """
    import timm
    from timm.data import resolve_data_config
    check_model_name(name)
    if not osp.isfile(weights):
        raise FileNotFoundError(f'weights of {name}: {weights!r} does not exist; pass '
                                f'--weights {name}=PATH with a local .pth/.safetensors file')
    state = _read_state_dict(weights)
    model = timm.create_model(name, pretrained=False)
    config = resolve_data_config({}, model=model)
    if any(k.startswith('backbone.') for k in state):
        model = _mmpretrain_model(name, weights)
    else:
        filter_fn = getattr(importlib.import_module(type(model).__module__),
                            'checkpoint_filter_fn', None)
        if filter_fn is not None:
            state = filter_fn(state, model)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f'weights {weights!r} do not fit {name}: missing keys '
                             f'{missing[:5]}, unexpected keys {unexpected[:5]}; pass a '
                             f'checkpoint of {name} (timm or mmpretrain format)')
    return model.eval(), config


def _mmpretrain_model(name: str, weights: str) -> nn.Module:
    arch = name.split('.')[0]
    if arch not in MMPRETRAIN_MODELS:
        raise ValueError(f'{weights!r} is an mmpretrain checkpoint, but mmpretrain has no '
                         f'224 px ImageNet model for {arch} (it has '
                         f'{list(MMPRETRAIN_MODELS)}); pass timm weights of {arch}')
    from mmpretrain import get_model
    return MMPretrainLogits(get_model(MMPRETRAIN_MODELS[arch], pretrained=weights))


class ImageListDataset(Dataset):
    """Images named in a labels file, one ``relative/path label`` per line (the flat
    ImageNet val layout, e.g. mmpretrain's ``meta/val.txt``)."""

    def __init__(self, root: str, labels_file: str, transform):
        from PIL import Image
        self.loader = lambda p: Image.open(p).convert('RGB')
        self.root, self.transform, self.samples = root, transform, []
        with open(labels_file) as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or not parts[1].isdigit():
                    raise ValueError(f'{labels_file}:{n}: expected "relative/path label", '
                                     f'got {line.strip()!r}')
                self.samples.append((osp.join(root, parts[0]), int(parts[1])))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return self.transform(self.loader(path)), label


def val_dataset(val_dir: str, transform, labels_file: Optional[str] = None,
                max_images: Optional[int] = None, num_classes: int = 1000) -> Dataset:
    """The validation set: ``val_dir/<wnid>/*`` (sorted wnids = class indices, as
    torchvision's ImageFolder) or, with ``labels_file``, the flat layout. With
    ``max_images``, an evenly spaced subset (deterministic, spans the classes)."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS
    if not osp.isdir(val_dir):
        raise FileNotFoundError(f'--val-dir {val_dir!r} is not a folder: pass the ImageNet '
                                'validation folder (val/<wnid>/*.JPEG, one sub-folder per '
                                'class, or flat images with --val-labels)')
    if labels_file is not None:
        if not osp.isfile(labels_file):
            raise FileNotFoundError(f'--val-labels {labels_file!r} does not exist')
        dataset = ImageListDataset(val_dir, labels_file, transform)
    else:
        classes = [d for d in os.listdir(val_dir) if osp.isdir(osp.join(val_dir, d))]
        if not classes:
            raise ValueError(f'--val-dir {val_dir!r} has no class sub-folders: arrange it as '
                             'val/<wnid>/*.JPEG or pass --val-labels FILE for flat images')
        if len(classes) > num_classes:
            raise ValueError(f'--val-dir {val_dir!r} has {len(classes)} class folders, more '
                             f'than the model\'s {num_classes} classes')
        dataset = ImageFolder(val_dir, transform=transform)
    if len(dataset) == 0:
        raise ValueError(f'--val-dir {val_dir!r} holds no images ({IMG_EXTENSIONS})')
    if max_images is not None and max_images < len(dataset):
        index = torch.linspace(0, len(dataset) - 1, max_images).round().long().unique()
        dataset = Subset(dataset, index.tolist())
    return dataset


@torch.no_grad()
def top1(model: nn.Module, dataset: Dataset, device: str, batch_size: int = 64,
         workers: int = 0) -> float:
    """Top-1 accuracy (%) of ``model`` on ``dataset`` (model left in eval mode)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=workers)
    model.eval()
    correct = total = 0
    for images, labels in loader:
        logits = model(images.to(device))
        correct += (logits.argmax(-1).cpu() == labels).sum().item()
        total += labels.numel()
    return 100.0 * correct / total


def parse_bits(setting: str) -> Tuple[int, int]:
    """``'W4A8'`` -> ``(4, 8)``."""
    s = setting.upper()
    if not (s.startswith('W') and 'A' in s and s[1:].replace('A', '', 1).isdigit()):
        raise ValueError(f'bits {setting!r} is invalid: use WxAy, e.g. W4A8')
    w, a = s[1:].split('A')
    return int(w), int(a)


def fingerprint(path: str) -> Dict[str, object]:
    """Identity of a local file for the run cache: absolute path, size, mtime."""
    st = os.stat(path)
    return dict(path=osp.abspath(path), size=st.st_size, mtime=int(st.st_mtime))

