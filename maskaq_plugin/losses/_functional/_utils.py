"""Helpers shared by the functional losses: layer lists and token reductions."""
from collections.abc import Sequence

import torch
from torch import Tensor


def layer_list(tensors: Tensor | Sequence[Tensor], name: str) -> list[Tensor]:
    """The per-layer tensors of one group as a list, checked to be ``(B, H, N, X)`` each
    and equally shaped.

    Args:
        tensors (Tensor | Sequence[Tensor]): one ``(B, H, N, X)`` tensor or a
            sequence of them, all of the same shape (one group of layers).
        name (str): argument name used in error messages.

    Returns:
        list[Tensor]: the ``L`` layers, not copied.
    """
    layers = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if not layers:
        raise ValueError(f'`{name}` is empty: pass at least one layer')
    shapes = [tuple(t.shape) for t in layers]
    if len(shapes[0]) != 4:
        raise ValueError(f'`{name}` layers must be 4-D (B, H, N, X), got shape {shapes[0]}')
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f'`{name}` mixes layer shapes {sorted(set(shapes))}: pass one group '
                         'of equally shaped layers per call (see group_records)')
    return layers


def stack_layers(tensors: Tensor | Sequence[Tensor], name: str) -> Tensor:
    """Stack the per-layer tensors of one group (see :func:`layer_list`) into
    ``(L, B, H, N, X)``."""
    return torch.stack(layer_list(tensors, name))


def key_profile(scores: Tensor | Sequence[Tensor], has_cls_token: bool,
                name: str = 'scores') -> Tensor:
    """Head-averaged attention profile over patch keys, one per layer and image.

    With a class token: the class-token query row over the patch keys (keys ``1:``).
    Without one: the mean over all query rows *(ours)*. Reduced layer by layer, so the
    ``(L, B, H, N, Nk)`` stack of the scores is never built (with a class token only
    row 0 is read).

    Args:
        scores (Tensor | Sequence[Tensor]): ``(B, H, N, Nk)`` raw scores per layer.
        has_cls_token (bool): whether token 0 of queries and keys is a class token.
        name (str): argument name used in error messages. Defaults to ``'scores'``.

    Returns:
        Tensor: ``(L, B, P)``, ``P = Nk - 1`` with a class token, else ``Nk``.
    """
    layers = layer_list(scores, name)
    if has_cls_token:
        return torch.stack([s[:, :, 0, 1:].mean(dim=1) for s in layers])
    return torch.stack([s.mean(dim=1).mean(dim=1) for s in layers])


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` naming both shapes when ``a`` and ``b`` differ."""
    if a.shape != b.shape:
        raise ValueError(f'`{name_a}` has shape {tuple(a.shape)} but `{name_b}` has '
                         f'{tuple(b.shape)}; they must match (same model, same input)')
