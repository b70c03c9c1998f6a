"""Batched QAT augmentations on normalised image tensors (docs/method.md, "Stage 2").

RandomResizedCrop, horizontal flip, colour jitter (0.8, 0.8, 0.8, 0.2) with p = 0.8,
random grayscale (p = 0.2) and Gaussian blur (kernel = 10 % of the image size), each
drawn per image like torchvision's per-sample transforms, but run on a whole
``(B, C, H, W)`` batch at once: the images are de-normalised to [0, 1], transformed,
clamped and normalised again. Differences from torchvision, for vectorisation: crop and
flip are one bilinear ``grid_sample`` (no antialiasing: the crop is always enlarged),
and the four jitter operations run in one random order per batch (torchvision: per image).
"""
import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

_GRAY = (0.2989, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, gen: torch.Generator, trials: int = None):
    shape = (n, ) if trials is None else (n, trials)
    return torch.rand(shape, generator=gen, device=gen.device) * (high - low) + low


def _gray(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    eq = maxc == minc
    cr = maxc - minc
    s = cr / torch.where(eq, torch.ones_like(maxc), maxc)
    div = torch.where(eq, torch.ones_like(cr), cr)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    h = ((maxc == r) * (bc - gc) + ((maxc == g) & (maxc != r)) * (2.0 + rc - bc) +
         ((maxc != g) & (maxc != r)) * (4.0 + gc - rc))
    return torch.stack((torch.fmod(h / 6.0 + 1.0, 1.0), s, maxc), 1)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6  # (B, H, W)
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    table = torch.stack([torch.stack(c, 1) for c in
                         ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))], 1)
    return table.gather(2, i[:, None, None].expand(-1, 3, 1, -1, -1)).squeeze(2)


class QATAugment:
    """Per-image random augmentation of a normalised batch, seeded by a generator.

    Args:
        mean (Sequence[float]): Normalisation mean per channel.
        std (Sequence[float]): Normalisation std per channel.
        scale (tuple): RandomResizedCrop area range. Defaults to (0.08, 1.0).
        ratio (tuple): RandomResizedCrop aspect-ratio range. Defaults to (3/4, 4/3).
        jitter (tuple): Brightness, contrast, saturation, hue strengths.
            Defaults to (0.8, 0.8, 0.8, 0.2).
        jitter_p (float): Probability of the colour jitter. Defaults to 0.8.
        gray_p (float): Probability of grayscale. Defaults to 0.2.
        blur_frac (float): Blur kernel size as a fraction of the image side (rounded
            down, made odd); sigma ~ U(0.1, 2.0) per image. Defaults to 0.1.

    Examples:
        >>> import torch
        >>> aug = QATAugment(mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> aug(torch.zeros(4, 3, 32, 32), torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], *,
                 scale: Tuple[float, float] = (0.08, 1.0),
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3),
                 jitter: Tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2),
                 jitter_p: float = 0.8, gray_p: float = 0.2, blur_frac: float = 0.1):
        if len(mean) != len(std):
            raise ValueError(f'mean {tuple(mean)} and std {tuple(std)} differ in length')
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale, self.ratio, self.jitter = scale, ratio, jitter
        self.jitter_p, self.gray_p, self.blur_frac = jitter_p, gray_p, blur_frac

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augment ``x`` (B, C, H, W, normalised); the generator must be on x's device."""
        mean, std = self.mean.to(x), self.std.to(x)
        img = (x * std + mean).clamp(0, 1)
        img = self.crop_flip(img, generator)
        if img.shape[1] == 3:
            img = self.colour_jitter(img, generator)
            gray = _uniform(len(img), 0, 1, generator) < self.gray_p
            img = torch.where(gray[:, None, None, None], _gray(img).expand_as(img), img)
        img = self.blur(img, generator)
        return (img - mean) / std

    def crop_flip(self, img: Tensor, gen: torch.Generator) -> Tensor:
        """RandomResizedCrop (10 trials, centre-crop fallback) and flip (p = 0.5)."""
        b, _, height, width = img.shape
        area = height * width
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        target = _uniform(b, *self.scale, gen, trials=10) * area
        ar = _uniform(b, *log_r, gen, trials=10).exp()
        w = (target * ar).sqrt().round()
        h = (target / ar).sqrt().round()
        ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)  # (B, 10)
        first = ok.float().argmax(1, keepdim=True)
        w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
        in_r = width / height  # fallback: centre crop at the closest allowed ratio
        fw = width if in_r <= self.ratio[1] else round(height * self.ratio[1])
        fh = height if in_r >= self.ratio[0] else round(width / self.ratio[0])
        any_ok = ok.any(1)
        w = torch.where(any_ok, w, torch.full_like(w, fw))
        h = torch.where(any_ok, h, torch.full_like(h, fh))
        i = torch.where(any_ok, (_uniform(b, 0, 1, gen) * (height - h + 1)).floor(),
                        (height - h) // 2)
        j = torch.where(any_ok, (_uniform(b, 0, 1, gen) * (width - w + 1)).floor(),
                        (width - w) // 2)
        flip = torch.where(_uniform(b, 0, 1, gen) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=gen.device)
        theta[:, 0, 0] = w / width * flip
        theta[:, 0, 2] = (2 * j + w) / width - 1
        theta[:, 1, 1] = h / height
        theta[:, 1, 2] = (2 * i + h) / height - 1
        grid = F.affine_grid(theta.to(img), list(img.shape), align_corners=False)
        return F.grid_sample(img, grid, mode='bilinear', padding_mode='border',
                             align_corners=False)

    def colour_jitter(self, img: Tensor, gen: torch.Generator) -> Tensor:
        """Brightness, contrast, saturation, hue (p = jitter_p per image)."""
        b = len(img)
        on = (_uniform(b, 0, 1, gen) < self.jitter_p).to(img)
        bri, con, sat, hue = self.jitter
        factors = [1 + on * (_uniform(b, max(0, 1 - v), 1 + v, gen) - 1)
                   for v in (bri, con, sat)]
        shift = on * _uniform(b, -hue, hue, gen)
        view = (-1, 1, 1, 1)
        for op in torch.randperm(4, generator=gen, device=gen.device).tolist():
            if op == 0:
                img = img * factors[0].view(view).to(img)
            elif op == 1:
                m = _gray(img).mean(dim=(1, 2, 3), keepdim=True)
                img = m + factors[1].view(view).to(img) * (img - m)
            elif op == 2:
                g = _gray(img)
                img = g + factors[2].view(view).to(img) * (img - g)
            else:
                hsv = _rgb_to_hsv(img)
                hsv = torch.cat([torch.remainder(hsv[:, :1] + shift.view(view).to(img), 1.0),
                                 hsv[:, 1:]], 1)
                img = _hsv_to_rgb(hsv)
            img = img.clamp(0, 1)
        return img

    def blur(self, img: Tensor, gen: torch.Generator) -> Tensor:
        """Gaussian blur, kernel = ``blur_frac`` of the side (odd), sigma ~ U(0.1, 2)."""
        b, c, height, width = img.shape
        k = int(self.blur_frac * min(height, width))
        k += 1 - k % 2
        if k < 3:
            return img
        sigma = _uniform(b, 0.1, 2.0, gen).to(img)
        r = torch.arange(k, device=img.device, dtype=img.dtype) - k // 2
        kern = torch.exp(-r.view(1, -1)**2 / (2 * sigma.view(-1, 1)**2))
        kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B·C, k)
        out = F.pad(img.reshape(1, b * c, height, width), (k // 2, ) * 4, mode='reflect')
        out = F.conv2d(out, kern.view(b * c, 1, 1, k), groups=b * c)
        out = F.conv2d(out, kern.view(b * c, 1, k, 1), groups=b * c)
        return out.view(b, c, height, width)
