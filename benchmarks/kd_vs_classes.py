"""How large is the KD term ``T²·KL(p_F ‖ p_Q)`` as a function of the number of classes?

The balance ``λ·L_mssim`` against KD is sometimes read as a class-count effect (10 digit
classes here, 1000 ImageNet classes in the paper). This prints the KD term, T = 5 as in
Stage 2, for random teacher logits of spread ``s`` and a student whose logits differ by
i.i.d. Gaussian noise of spread ``σ`` (what fake quantization does to the logits, to first
order), for C = 10, 100, 1000 classes. Second-order expansion: ``T²·KL ≈ Var_p(ε)/2 ≈
σ²·(1 − 1/C)/2`` when ``s`` is small against T — the class count barely enters; the
student's logit error does.

``--digits`` also measures the real thing on the tiny digits ViT (10 classes) of
tools/benchmark_cls.py: the student calibrated on clamped noise (both recipes' inits),
then on 250 real test digits the std of its logit error ``z_Q − z_F``, the KD term, and
``λ·L_mssim`` (masked, λ = 10) — the start of Stage 2.

    python -m benchmarks.kd_vs_classes [--digits]
"""
import argparse

import torch

from maskaq_plugin.losses.defaults import KD_TEMPERATURE


def kd_term(num_classes: int, logit_std: float, noise_std: float, n: int = 4096,
            temperature: float = KD_TEMPERATURE, seed: int = 0) -> float:
    """Mean ``T²·KL(softmax(z/T) ‖ softmax((z + ε)/T))`` over ``n`` random samples."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, num_classes, generator=gen) * logit_std
    eps = torch.randn(n, num_classes, generator=gen) * noise_std
    p = (z / temperature).softmax(1)
    log_q = ((z + eps) / temperature).log_softmax(1)
    kl = (p * (p.clamp_min(1e-12).log() - log_q)).sum(1).mean()
    return float(kl * temperature ** 2)


def digits_balance():
    """The start-of-QAT balance on the digits ViT; prints a markdown table."""
    import benchmarks.cls_digits as cls
    from maskaq_plugin.losses.defaults import MSSIM_WEIGHT
    from maskaq_plugin.qat import classification_qat_loss
    from maskaq_plugin.quant import calibrate_ranges_
    _, _, x_test, y_test = cls.load_digits()
    x_test = cls.to_input(x_test)[:250]
    fp, _ = cls.load_or_train(None)
    lo = ((0 - torch.tensor(cls.MEAN)) / torch.tensor(cls.STD)).view(1, 3, 1, 1)
    hi = ((1 - torch.tensor(cls.MEAN)) / torch.tensor(cls.STD)).view(1, 3, 1, 1)
    noise = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    noise = torch.maximum(torch.minimum(noise, hi), lo)
    print('| student (calibrated on 64 noise images) | bits | logit error std σ | KD | '
          f'{MSSIM_WEIGHT:g}·L_mssim | KD share of the loss |')
    print('|---|---|---|---|---|---|')
    for label, recipe, quant in (("lsq, authors' init", 'lsq', {}),
                                 ('lsq, act_init minmax', 'lsq', dict(act_init='minmax')),
                                 ('nncf', 'nncf', {})):
        cls.RECIPE, cls.QUANT = recipe, quant
        for w_bits, a_bits in ((4, 4), (3, 3)):
            teacher, q = cls.build_pair(fp, w_bits, a_bits)
            calibrate_ranges_(q, list(noise.split(32)), subset_size=64)
            with torch.no_grad():
                err = (q.eval()(x_test) - teacher(x_test)).std().item()
                out = classification_qat_loss(teacher, q, x_test)
            kd, ms = out['kd'].item(), MSSIM_WEIGHT * out['mssim'].item()
            print(f'| {label} | W{w_bits}A{a_bits} | {err:.2f} | {kd:.3f} | {ms:.3f} | '
                  f'{kd / (kd + ms):.0%} |')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--digits', action='store_true',
                        help='also measure the balance on the digits ViT')
    args = parser.parse_args()
    torch.set_num_threads(1)
    print('| teacher logit std s | student logit error σ | C = 10 | C = 100 | C = 1000 | σ²/2 |')
    print('|---|---|---|---|---|---|')
    for s in (1.0, 3.0, 6.0):
        for sigma in (0.3, 1.0, 3.0):
            cells = ' | '.join(f'{kd_term(c, s, sigma):.3f}' for c in (10, 100, 1000))
            print(f'| {s:g} | {sigma:g} | {cells} | {sigma ** 2 / 2:.3f} |')
    if args.digits:
        print()
        digits_balance()


if __name__ == '__main__':
    main()
