"""L_ent: negative differential entropy of patch similarity."""
import itertools
import math

import pytest
import torch

from maskaq_plugin.losses.functional import patch_similarity_entropy

LOG_2PIE = math.log(2 * math.pi * math.e)


def naive_entropy_of_rows(rows):
    """-h of one (r, Nk) block of rows, by explicit loops."""
    v = [row / max(row.norm().item(), 1e-6) for row in rows]
    sims = torch.stack([torch.stack([a @ b for b in v]) for a in v]).flatten()
    var = ((sims - sims.mean())**2).mean()  # population variance, diagonal included
    return -0.5 * (LOG_2PIE + torch.log(var + 1e-8))


def naive_entropy(layers, has_cls_token):
    terms = []
    for s in layers:
        avg = s.mean(dim=1)  # (B, N, Nk)
        for b in range(avg.shape[0]):
            block = avg[b, 1:, 1:] if has_cls_token else avg[b]
            terms.append(naive_entropy_of_rows(block))
    return torch.stack(terms).mean()


def test_hand_computed_orthogonal_rows():
    # Rows [1, 0] and [0, 1]: the similarity matrix is I2, entries {1, 0, 0, 1},
    # population variance 0.25, so h = 0.5 * log(2*pi*e*0.25) and the loss is -h.
    scores = torch.eye(2, dtype=torch.float64).reshape(1, 1, 2, 2)
    loss = patch_similarity_entropy(scores, has_cls_token=False)
    assert loss.item() == pytest.approx(-0.5 * math.log(2 * math.pi * math.e * 0.25), abs=1e-7)
    assert loss.item() == pytest.approx(-0.7257913526, abs=1e-7)


def test_cls_token_and_heads_are_reduced_first():
    # Two heads averaging to I2 on the patch block; the class row/column hold junk.
    s = torch.full((1, 2, 3, 3), 9.0, dtype=torch.float64)
    s[0, 0, 1:, 1:] = torch.tensor([[2., 0.], [0., 0.]])
    s[0, 1, 1:, 1:] = torch.tensor([[0., 0.], [0., 2.]])
    loss = patch_similarity_entropy(s, has_cls_token=True)
    expected = patch_similarity_entropy(torch.eye(2, dtype=torch.float64).reshape(1, 1, 2, 2),
                                        has_cls_token=False)
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize('has_cls_token,shape', [
    (True, (3, 2, 6, 6)),
    (False, (3, 2, 5, 5)),
    (False, (2, 2, 7, 3)),  # SRA: 7 query rows, each a vector over 3 pooled keys
])
def test_matches_naive_loop_without_subsampling(has_cls_token, shape):
    torch.manual_seed(0)
    layers = [torch.randn(shape, dtype=torch.float64) for _ in range(2)]
    loss = patch_similarity_entropy(layers, has_cls_token=has_cls_token, num_rows=64)
    torch.testing.assert_close(loss, naive_entropy(layers, has_cls_token))


def test_subsampled_value_is_one_of_the_row_subsets():
    torch.manual_seed(1)
    s = torch.randn(1, 2, 4, 5, dtype=torch.float64)
    block = s.mean(dim=1)[0]  # (4, 5)
    candidates = [naive_entropy_of_rows(block[list(rows)]).item()
                  for rows in itertools.combinations(range(4), 3)]
    seen = set()
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        value = patch_similarity_entropy(s, has_cls_token=False, num_rows=3, generator=g).item()
        assert min(abs(value - c) for c in candidates) < 1e-9
        seen.add(round(value, 9))
    assert len(seen) > 1  # different seeds draw different rows


def test_generator_determinism():
    torch.manual_seed(2)
    layers = [torch.randn(2, 3, 11, 11) for _ in range(3)]

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return patch_similarity_entropy(layers, has_cls_token=True, num_rows=4, generator=g)

    torch.testing.assert_close(run(5), run(5), rtol=0, atol=0)


def test_identical_rows_stay_finite():
    s = torch.ones(1, 1, 3, 3)
    loss = patch_similarity_entropy(s, has_cls_token=False)
    assert loss.item() == pytest.approx(-0.5 * (LOG_2PIE + math.log(1e-8)), rel=1e-5)


def test_gradient_reaches_scores():
    torch.manual_seed(3)
    s = torch.randn(2, 2, 5, 5, requires_grad=True)
    patch_similarity_entropy(s, has_cls_token=True).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_bad_num_rows_raises():
    with pytest.raises(ValueError, match='num_rows must be >= 1, got 0'):
        patch_similarity_entropy(torch.randn(1, 1, 3, 3), has_cls_token=False, num_rows=0)
