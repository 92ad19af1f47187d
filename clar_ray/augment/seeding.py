"""numpy's ``SeedSequence`` → ``PCG64`` seeding, computed for a whole batch of clips at once.

The seed rule (``clar_ray.augment.compose``) gives every (clip, view, step) its own generator,
``PCG64(SeedSequence(words(seed, epoch, sample_id, view), spawn_key=(step,)))``. Building one
costs ~25 µs in numpy, and the cheap augmentations spend ~50 µs on a view: for a batch, this
module derives the same PCG64 states with array ops over the batch (the ``SeedSequence`` hash
on uint32 arrays, then PCG64's seeding in Python integers), so one reused generator can be set
to each state in turn. Outputs equal numpy's to the bit (tests compare them for random
inputs), so the views do not depend on which path built them.

The constants and steps are those of ``numpy/random/bit_generator.pyx`` (``SeedSequence``,
pool of four 32-bit words) and ``pcg64.h`` (``pcg_setseq_128_srandom_r``).

Legend: B clips in a batch, W entropy words.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

_M32 = 0xFFFFFFFF
_M128 = (1 << 128) - 1
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_POOL_SIZE = 4
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645

#: A 32-bit word: a Python int (the same for every row) or a (B,) uint32 array. Every
#: operation below masks to 32 bits, which wraps Python ints as uint32 arrays wrap, so words
#: common to the batch are hashed once as ints and only the rows' own words as arrays.
Word = int | np.ndarray


class _HashConst:
    """The running multiplier of ``SeedSequence``'s hashmix (the same for every row)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def hashmix(self, word: Word) -> Word:
        """The hashmix of one word; advances the constant."""
        out = word ^ self.value
        self.value = (self.value * _MULT_A) & _M32
        out = (out * self.value) & _M32
        return out ^ (out >> 16)


def _mix(x: Word, y: Word) -> Word:
    out = (((_MIX_MULT_L * x) & _M32) - ((_MIX_MULT_R * y) & _M32)) & _M32
    return out ^ (out >> 16)


def seed_sequence_words(entropy: Sequence[Word], n_words: int) -> list[Word]:
    """``SeedSequence(entropy).generate_state(n_words, np.uint32)`` for a batch.

    Args:
        entropy: W >= 4 words, the assembled entropy of each row (run entropy, then the spawn
            key): each an int in [0, 2**32) shared by all rows, or a (B,) uint32 array.
        n_words: 32-bit words to generate.

    Returns:
        ``n_words`` words, arrays wherever the entropy held one.
    """
    if len(entropy) < _POOL_SIZE:
        raise ValueError(f"entropy must have at least {_POOL_SIZE} words, got {len(entropy)}")
    const = _HashConst(_INIT_A)
    pool = [const.hashmix(entropy[i]) for i in range(_POOL_SIZE)]
    for src in range(_POOL_SIZE):
        for dst in range(_POOL_SIZE):
            if src != dst:
                pool[dst] = _mix(pool[dst], const.hashmix(pool[src]))
    for src in range(_POOL_SIZE, len(entropy)):
        for dst in range(_POOL_SIZE):
            pool[dst] = _mix(pool[dst], const.hashmix(entropy[src]))
    value, words = _INIT_B, []
    for i in range(n_words):
        word = pool[i % _POOL_SIZE] ^ value
        value = (value * _MULT_B) & _M32
        word = (word * value) & _M32
        words.append(word ^ (word >> 16))
    return words


def pcg64_states(entropy: Sequence[Word]) -> Iterator[dict]:
    """The ``bit_generator.state`` of ``PCG64(SeedSequence(entropy))`` for each row.

    Args:
        entropy: W words (see :func:`seed_sequence_words`), at least one of them a (B,) array.

    Yields:
        B dicts to assign to a ``PCG64``'s ``state``, in row order.
    """
    rows = max(np.size(word) for word in entropy)
    words = np.stack([np.broadcast_to(np.asarray(word, np.uint64), (rows,))
                      for word in seed_sequence_words(entropy, 8)])  # (8, B)
    halves = (words[0::2] | (words[1::2] << np.uint64(32))).T.tolist()  # (B, 4) uint64
    for w0, w1, w2, w3 in halves:
        initstate = (w0 << 64) | w1
        inc = ((((w2 << 64) | w3) << 1) | 1) & _M128
        state = (inc + initstate) & _M128  # srandom: state = 0, step, += initstate
        state = (state * _PCG_MULT + inc) & _M128  # step
        yield {"bit_generator": "PCG64", "state": {"state": state, "inc": inc},
               "has_uint32": 0, "uinteger": 0}
