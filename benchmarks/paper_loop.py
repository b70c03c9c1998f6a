"""The MaskAQ synthesis loop written plainly, in the style of the authors' code.

A speed baseline for :class:`maskaq_plugin.synthesis.Synthesizer`: the same objective
(docs/method.md, "Stage 1": same augmentation, losses, weights, optimiser, schedule and
clamp), with the loop structure of the authors' ``generate`` in
``MaskAQ/hydra_image_gen_ssim_att_map.py`` (github.com/hfutqian/MaskAQ):

* augmentation draws its random numbers once per batch (their ``GaussianNoise`` and
  ``ColorJitter`` modules) and applies them image by image here;
* F and Q run once each per iteration on the augmented batch (as the authors do), and
  their parameters are left as the caller has them: the authors never freeze F or Q
  during synthesis, so ``loss.backward()`` also fills the parameter gradients
  (``freeze=True`` switches that off, to separate its cost);
* ``L_head``: a loop over layers and images, the head-pair SSIM maps by broadcasting
  (their Swin path ``ssim_loss_att_map_swin``), variances as ``E[x²] − μ²``;
* ``L_ent``: a loop over layers and images, one random row draw per image;
* mask: a loop over images (top-k, then the random drop image by image);
* ``L_mad``: a loop over layers, ``Σ|diff|·M / ΣM`` of each layer's batch;
* a NaN check of the images after every step.

``L_head`` averages ``1 − SSIM²`` over the full ``H×H`` head matrix of each layer
(diagonal included), then over all layers, and the mask keeps ``k = int(ρ·P)`` keys
(a floor), both as in the authors' code and in ``maskaq_plugin``. Where the authors'
code and docs/method.md differ, docs/method.md (and the choices of ``maskaq_plugin``) are
followed, so that both compute the same numbers: ``ρ_t`` and ``σ_t`` reaching their
end values at the last iteration, the random drop applied to the top-k list in rank
order, L_mad also for Swin, and hierarchical backbones handled per group of equally
shaped layers (docs/method.md, "Hierarchical backbones"). The random draws
come from one ``torch.Generator`` in the order of ``Synthesizer`` (augmentation, L_ent
rows, mask drop), so with the same generator state both draw the same numbers
(``torch.rand`` of ``(B, n)`` equals ``B`` draws of ``(n,)`` on the CPU). The generator
is a CPU one on every device: on CUDA its draws are moved to the images' device.
"""
import math

import torch
import torch.nn.functional as F

from maskaq_plugin.attention import AttentionRecorder

WEIGHTS = dict(head=1.0, sem=1.0, tv=2.5e-5, ent=1.0, mad=0.1)
C1, C2 = 0.01**2, 0.03**2


def augment(img, i, iters, gen):
    """Roll, Gaussian offset and colour jitter of iteration ``i`` (docs/method.md step 1)."""
    jitter = 8 if i < iters // 2 else 16
    off1, off2 = torch.randint(-jitter, jitter + 1, (2, ), generator=gen).tolist()
    img_jit = torch.roll(img, shifts=(off1, off2), dims=(2, 3))
    batch, channels = img.shape[:2]
    sigma = 0.5 * (1 - i / max(iters - 1, 1))
    noise = (torch.randn(batch, channels, 1, 1, generator=gen) * sigma).to(img.device)
    mean = (torch.rand(batch, channels, 1, 1, generator=gen) * 2 - 1).to(img.device)
    std = (torch.rand(batch, channels, 1, 1, generator=gen) * 2 - 1).exp().to(img.device)
    out = []
    for b in range(batch):
        out.append((img_jit[b] + noise[b] - mean[b]) / std[b])
    return torch.stack(out)


def key_grid(rec):
    """``(h, w)`` of the patch keys: a square when possible, else one row."""
    keys = rec.scores.shape[-1] - int(rec.has_cls_token)
    side = math.isqrt(keys)
    return (side, side) if side * side == keys else (1, keys)


def ssim_loss_att_map(records):
    """``L_head``: mean over layers of the mean over (image, query, H×H) of 1 − SSIM²."""
    layer_losses = []
    for rec in records:
        att = rec.scores[:, :, 1:, 1:] if rec.has_cls_token else rec.scores
        h, w = key_grid(rec)
        batch, heads = att.shape[:2]
        image_losses = []
        for b in range(batch):
            att_map = att[b].transpose(0, 1)  # (N, H, P)
            att_map = att_map - att_map.min(-1, keepdim=True)[0]
            att_map = att_map / (att_map.max(-1, keepdim=True)[0] + 1e-8)
            att_map = att_map.reshape(att_map.shape[0], heads, h, w)
            mu = att_map.mean([-2, -1])  # (N, H)
            mu_sq = mu.pow(2)
            mu1_mu2 = mu.unsqueeze(1) * mu.unsqueeze(2)  # (N, H, H)
            sigma_sq = (att_map * att_map).mean([-2, -1]) - mu_sq
            sigma12 = (att_map.unsqueeze(1) * att_map.unsqueeze(2)).mean([-2, -1]) - mu1_mu2
            ssim_map = ((2 * mu1_mu2 + C1) * (2 * sigma12 + C2)) / (
                (mu_sq.unsqueeze(1) + mu_sq.unsqueeze(2) + C1) *
                (sigma_sq.unsqueeze(1) + sigma_sq.unsqueeze(2) + C2))
            image_losses.append((1 - ssim_map**2).mean())
        layer_losses.append(torch.stack(image_losses).mean())
    return torch.stack(layer_losses).mean()


def attention_entropy_loss_similarity(groups, gen, patch_subsample_k=64, eps=1e-8):
    """``L_ent``: −(mean over layers of the mean over images of h)."""
    two_pi_e_log = math.log(2.0 * math.pi * math.e)
    layer_h = []
    for records in groups:
        for rec in records:
            att_mean = rec.scores.mean(dim=1)  # (B, N, Nk)
            if rec.has_cls_token:
                att_mean = att_mean[:, 1:, 1:]
            total_h = 0.0
            for b in range(att_mean.shape[0]):
                vecs = att_mean[b]
                n = vecs.shape[0]
                if n > patch_subsample_k:
                    idx = torch.rand(n, generator=gen).argsort()[:patch_subsample_k].to(
                        vecs.device)
                    vecs = vecs[idx]
                vecs = F.normalize(vecs, p=2, dim=-1, eps=1e-6)
                sims = torch.matmul(vecs, vecs.t())
                var = torch.var(sims.view(-1), unbiased=False) + eps
                total_h = total_h + 0.5 * (two_pi_e_log + torch.log(var))
            layer_h.append(total_h / att_mean.shape[0])
    return -torch.stack(layer_h).mean()


def class_row(scores, has_cls_token):
    """Head-averaged class-token row over patch keys (no class token: mean over rows)."""
    att = scores.mean(1)  # (B, N, Nk)
    return att[:, 0, 1:] if has_cls_token else att.mean(1)


def generate_attention_mask(records, ratio, gen, drop_prob=0.3):
    """Top ``int(ρ·P)`` keys of the layer-averaged profile, then the random drop."""
    with torch.no_grad():
        combined = torch.stack([r.scores for r in records]).mean(0)
        combined = class_row(combined, records[0].has_cls_token)  # (B, P)
        masks = []
        for b in range(combined.shape[0]):
            att_b = combined[b]
            k = min(len(att_b), max(1, int(len(att_b) * ratio)))
            keep = max(1, int(round(k * (1.0 - drop_prob))))
            top_indices = torch.topk(att_b, k).indices
            if keep < k:
                perm = torch.rand(k, generator=gen).argsort().to(top_indices.device)
                top_indices = top_indices[perm[:keep]]
            mask = torch.zeros_like(att_b)
            mask[top_indices] = 1.0
            masks.append(mask)
        return torch.stack(masks)


def masked_attention_difference_loss(records_f, records_q, mask):
    """``L_mad`` of one group: mean over layers of ``Σ|s_F − s_Q|·M / ΣM``."""
    total_loss = 0.0
    for rec_f, rec_q in zip(records_f, records_q):
        att_f_cls = class_row(rec_f.scores, rec_f.has_cls_token)
        att_q_cls = class_row(rec_q.scores, rec_q.has_cls_token)
        masked_diff = torch.abs(att_f_cls - att_q_cls) * mask
        total_loss = total_loss + masked_diff.sum() / (mask.sum() + 1e-8)
    return total_loss / len(records_f)


def get_image_prior_losses(inputs_jit):
    """``L_tv`` of the un-augmented images."""
    diff1 = inputs_jit[:, :, :, :-1] - inputs_jit[:, :, :, 1:]
    diff2 = inputs_jit[:, :, :-1, :] - inputs_jit[:, :, 1:, :]
    diff3 = inputs_jit[:, :, 1:, :-1] - inputs_jit[:, :, :-1, 1:]
    diff4 = inputs_jit[:, :, :-1, :-1] - inputs_jit[:, :, 1:, 1:]
    return torch.norm(diff1) + torch.norm(diff2) + torch.norm(diff3) / math.sqrt(
        2) + torch.norm(diff4) / math.sqrt(2)


def group_by_shape(records):
    """Equally shaped layers together, in forward order."""
    groups = {}
    for i, rec in enumerate(records):
        groups.setdefault((*rec.scores.shape, rec.context.shape[-1]), []).append(i)
    return list(groups.values())


def loss_terms(model_origin, model_quant, img_train, img_jit, class_label, i, iters, gen):
    """The unweighted loss terms of one iteration (``mad`` only with ``model_quant``)."""
    with AttentionRecorder(model_origin) as hook:
        output = model_origin(img_jit)
    records_f = hook.records
    groups = group_by_shape(records_f)
    terms = {}
    terms['head'] = ssim_loss_att_map(records_f)
    terms['sem'] = F.cross_entropy(output, class_label)
    terms['tv'] = get_image_prior_losses(img_train)
    terms['ent'] = attention_entropy_loss_similarity(
        [[records_f[j] for j in g] for g in groups], gen)
    if model_quant is not None:
        with AttentionRecorder(model_quant) as hook_quant:
            model_quant(img_jit)
        records_q = hook_quant.records
        ratio = 0.5 + (0.1 - 0.5) * i / max(iters - 1, 1)
        group_losses = []
        for g in groups:
            group_f = [records_f[j] for j in g]
            mask = generate_attention_mask(group_f, ratio, gen)
            group_losses.append(masked_attention_difference_loss(
                group_f, [records_q[j] for j in g], mask))
        terms['mad'] = sum(group_losses) / len(group_losses)
    return terms


def generate(model_origin, model_quant, *, batch_size, iters, num_classes, input_size, mean,
             std, gen, freeze=False, lr=0.1):
    """Optimise one batch of images for ``iters`` iterations.

    Args:
        model_origin (nn.Module): Full-precision model F (explicit attention).
        model_quant (nn.Module | None): Quantized model Q; None: no L_mad.
        batch_size (int): Images in the batch.
        iters (int): Iterations T.
        num_classes (int): Classes of F's logits (random labels).
        input_size (tuple): ``(C, H, W)``.
        mean, std (Sequence[float]): Normalisation of F's input.
        gen (torch.Generator): CPU generator: images, labels, then every random draw
            (moved to the device of ``model_origin``'s parameters).
        freeze (bool): Switch off the parameter gradients of F and Q during the run
            (the authors do not). Defaults to False.
        lr (float): AdamW learning rate. Defaults to 0.1.

    Returns:
        dict: ``images`` (B, C, H, W), ``labels`` (B,), ``first`` and ``last``: the
        loss terms (floats, with their weighted sum ``loss``) of the first and last
        iteration, and ``nan`` (True when the batch became non-finite and was dropped).
    """
    models = [m for m in (model_origin, model_quant) if m is not None]
    grads_before = {p: p.grad for m in models for p in m.parameters()}
    flags = {p: p.requires_grad for p in grads_before}
    for m in models:
        m.eval()
        if freeze:
            m.requires_grad_(False)
    device = next(model_origin.parameters()).device
    mu = torch.tensor(mean).view(-1, 1, 1).to(device)
    sd = torch.tensor(std).view(-1, 1, 1).to(device)
    img_train = torch.randn((batch_size, *input_size), generator=gen).to(device)
    class_label = torch.randint(num_classes, (batch_size, ), generator=gen).to(device)
    img_train.requires_grad = True
    opt = torch.optim.AdamW([img_train], lr=lr, betas=[0.9, 0.999], eps=1e-8,
                            weight_decay=1e-6)
    lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters, lr * 1e-2)
    first = last = None
    nan_flag = False
    try:
        for i in range(iters):
            opt.zero_grad()
            img_jit = augment(img_train, i, iters, gen)
            terms = loss_terms(model_origin, model_quant, img_train, img_jit, class_label,
                               i, iters, gen)
            total_loss = sum(WEIGHTS[k] * v for k, v in terms.items())
            total_loss.backward()
            opt.step()
            lr_scheduler.step()
            img_train.data = torch.max(torch.min(img_train.data, (1 - mu) / sd), -mu / sd)
            last = {k: v.item() for k, v in terms.items()}
            last['loss'] = total_loss.item()
            first = first or last
            if torch.isnan(img_train).sum() > 0:
                nan_flag = True
                break
    finally:
        for p, grad in grads_before.items():
            p.grad = grad
            p.requires_grad_(flags[p])
    return dict(images=img_train.detach(), labels=class_label, first=first, last=last,
                nan=nan_flag)
