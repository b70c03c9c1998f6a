"""Seed derivation: the values of today, pinned at every place that derives a seed.

The literals were computed with the code before ``maskaq_plugin.utils.seeding`` existed
(``np.random.SeedSequence([seed, *tags])`` written out at each place); a change here
changes which images every entry point synthesizes.
"""
import doctest
import sys

import pytest

from maskaq_plugin.synthesis.rounds import BOOTSTRAP_TAG
from maskaq_plugin.synthesis.shards import shard_seed
from maskaq_plugin.synthesis.synthesizer import batch_seed
from maskaq_plugin.utils import seeding
from maskaq_plugin.utils.seeding import derive_seed, derive_words

# (seed, *tags) -> first 32-bit word of SeedSequence([seed, *tags])
WORD = {(0, 0): 2968811710, (0, 1): 3964924996, (1234, 3): 3257969200,
        (0, 0, 0): 2968811710, (5, 2, 100006): 2779037374,
        (0, 0xB007): 3169303369, (42, 0xB007): 3374968998}
# (seed, batch_index, rank, attempt) -> batch_seed (63 bits from two words)
BATCH = {(0, 0, 0, 0): 6375474603054492659, (3, 2, 1, 1): 4531870387233293846,
         (2**31 - 1, 7, 0, 0): 5481567296175036144}
# seed -> the two words of SeedSequence([seed, 10**6]) (QAT loop: CPU and device generator)
QAT_KEYS = {0: (1671244638, 1988002964), 42: (4268045363, 268887357)}


def test_derive_seed_words():
    for key, value in WORD.items():
        assert derive_seed(*key) == value
        assert derive_words(*key) == (value, )
    for seed, words in QAT_KEYS.items():
        assert derive_words(seed, 10**6, num_words=2) == words
    for (seed, b, rank, attempt), value in BATCH.items():
        assert derive_seed(seed, rank, b, attempt, bits=63) == value


def test_derive_seed_bad_bits():
    with pytest.raises(ValueError, match='bits=16'):
        derive_seed(0, bits=16)


def test_docstring_examples():
    assert doctest.testmod(seeding).attempted >= 3
    assert doctest.testmod(seeding).failed == 0


def test_round_service_seeds():
    """Shard ``index`` of rank ``r``, round ``k``: ``(seed, k, r * 100003 + index)``."""
    for seed, k, rank, index in [(0, 0, 0, 0), (5, 2, 1, 3)]:
        assert shard_seed(seed, k, rank, index) == WORD[(seed, k, rank * 100003 + index)]
    for seed in (0, 42):
        assert derive_seed(seed, BOOTSTRAP_TAG) == WORD[(seed, 0xB007)]


def test_synthesizer_batch_seeds():
    for (seed, b, rank, attempt), value in BATCH.items():
        assert batch_seed(seed, b, rank=rank, attempt=attempt) == value


def test_frozen_synthesizer_batch_seeds():
    from benchmarks.synthesis_speed import load_synthesizer
    first = sys.modules[load_synthesizer('benchmarks/synthesizer_first.py').__module__]
    for (seed, b, rank, attempt), value in BATCH.items():
        assert first.batch_seed(seed, b, rank=rank, attempt=attempt) == value
