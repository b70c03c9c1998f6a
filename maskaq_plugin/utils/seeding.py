"""Seed derivation: every seed the package derives from a user's ``seed`` comes from here.

A derived seed is a hash of ``(seed, *tags)`` through :class:`numpy.random.SeedSequence`,
so that different uses of one user seed (a synthesis round, a batch, a shard, the QAT
shuffle) draw independent streams, and the same ``(seed, *tags)`` gives the same stream on
every machine. The tags each place uses:

- :class:`~maskaq_plugin.synthesis.rounds.RoundService` (Stage 1 of both entry points,
  :func:`maskaq_plugin.quantize_data_free` and ``SampleRefreshHook``): the bootstrap
  synthesis ``(seed, 0xB007)``; shard ``index`` of rank ``r`` in round ``k``
  ``(seed, k, r * 100003 + index)`` (one synthesis batch per shard);
- :class:`~maskaq_plugin.synthesis.Synthesizer`, batch ``b`` (63 bits):
  ``(seed, rank, b, attempt)``;
- :func:`~maskaq_plugin.qat.run_classification_qat`, shuffle and augmentation
  generators (two words): ``(seed, 10**6)``.

So the two entry points synthesise the same round-0 images for one ``seed`` when they
split a round the same way (``tests/test_api/test_same_round0.py``). Before the round
service (issue #11) the API seeded its round ``r`` (bootstrap ``r = 0``) with
``(seed, r)`` and synthesised a round in one call; it now uses the hook's scheme above,
so its images for a given seed changed once.
"""
from typing import Tuple

import numpy as np


def derive_words(seed: int, *tags: int, num_words: int = 1) -> Tuple[int, ...]:
    """``num_words`` 32-bit words of ``SeedSequence([seed, *tags])``.

    Args:
        seed (int): The user's seed (non-negative).
        *tags (int): Non-negative integers naming the use (round, batch, ...).
        num_words (int): How many words. Defaults to 1.

    Returns:
        tuple[int]: The words, each in ``[0, 2**32)``.

    Examples:
        >>> derive_words(0, 10**6, num_words=2)
        (1671244638, 1988002964)
    """
    state = np.random.SeedSequence([seed, *tags]).generate_state(num_words)
    return tuple(int(word) for word in state)


def derive_seed(seed: int, *tags: int, bits: int = 32) -> int:
    """One seed derived from ``(seed, *tags)``.

    Args:
        seed (int): The user's seed (non-negative).
        *tags (int): Non-negative integers naming the use (round, batch, ...).
        bits (int): 32 (the first word) or 63 (two words, ``w0 << 31 | w1 >> 1``, for
            :meth:`torch.Generator.manual_seed`). Defaults to 32.

    Returns:
        int: The seed, in ``[0, 2**bits)``.

    Examples:
        >>> derive_seed(0, 0)
        2968811710
        >>> derive_seed(0, 0, 0, 0, bits=63)
        6375474603054492659
    """
    if bits == 32:
        return derive_words(seed, *tags)[0]
    if bits == 63:
        high, low = derive_words(seed, *tags, num_words=2)
        return high << 31 | low >> 1
    raise ValueError(f'bits={bits!r} is not supported: pass 32 or 63')
