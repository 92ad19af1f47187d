"""The seed rule: every (clip, view, augmentation step) gets its own numpy generator.

The view ``v`` of clip ``i`` in epoch ``e`` of a run seeded ``s`` is a pure function of
``(s, e, i, v)``, whatever the batch boundaries, the order of rows, or the number of actors and
nodes. :func:`view_rng` builds that view's generator from ``np.random.SeedSequence`` over the
four integers, and step ``k`` of the sequence (the k-th augmentation, counted in the job's full
sequence) draws from the view's k-th child (:func:`step_rng`, the same as
``SeedSequence.spawn``). Each step thus has its own stream: a change of ``p`` or of a range in
one step leaves the draws of the others as they were, and the part of a sequence run on the
training device (:mod:`clar_ray.augment.batch`) draws exactly what the CPU would have drawn for
it. :func:`draw_step` applies the rule to a batch; the argument checks that the CPU and the
device augmenters share are here too.

A generator per row and step is ``PCG64(SeedSequence(words(seed, epoch, sample_id, view),
spawn_key=(step,)))``. Building one in numpy costs about as much as a cheap augmentation of the
view, so for a batch this module derives the same PCG64 states with array ops over the batch
(the ``SeedSequence`` hash on uint32 arrays, then PCG64's seeding in Python integers), and one
reused generator is set to each state in turn. Outputs equal numpy's to the bit (tests compare
them for random inputs), so the views do not depend on which path built them.

The constants and steps are those of ``numpy/random/bit_generator.pyx`` (``SeedSequence``,
pool of four 32-bit words) and ``pcg64.h`` (``pcg_setseq_128_srandom_r``).

Legend: B clips in a batch, W entropy words.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from clar_ray.augment.spec import AugmentationSpec, Draws, stack_draws

_WORD = 2**32
#: Batches of at least this many rows derive their generators' states together
#: (:func:`pcg64_states`); below it one :func:`step_rng` per row is cheaper.
BATCH_SEEDING_MIN_ROWS = 16

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


# --------------------------------------------------------------------------- the seed rule


def seed_entropy(seed: int, epoch: int, sample_id: int, view: int) -> list[int]:
    """The entropy of a view's ``SeedSequence``: the four integers as eight 32-bit words.

    Fixed width, so no two tuples give the same words.

    Raises:
        ValueError: When an argument is negative or does not fit in 64 bits.
    """
    words = []
    for name, value in (("seed", seed), ("epoch", epoch), ("sample_id", sample_id),
                        ("view", view)):
        value = int(value)
        if not 0 <= value < _WORD**2:
            raise ValueError(f"{name} must be in [0, 2**64), got {value}")
        words += [value % _WORD, value // _WORD]
    return words


def view_rng(seed: int, epoch: int, sample_id: int, view: int) -> np.random.Generator:
    """The generator of one view of one clip: ``SeedSequence`` over (seed, epoch, id, view).

    Raises:
        ValueError: When an argument is negative or does not fit in 64 bits.
    """
    return np.random.default_rng(np.random.SeedSequence(seed_entropy(seed, epoch, sample_id, view)))


def step_rng(seed: int, epoch: int, sample_id: int, view: int, step: int) -> np.random.Generator:
    """The generator of step ``step`` of a view: the view's ``step``-th spawned child."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    # The generator of default_rng(SeedSequence(words, spawn_key=(step,))), built directly
    # (no argument dispatch, the words as one uint32 array): it is built once per row, step
    # and view.
    words = np.array(seed_entropy(seed, epoch, sample_id, view), dtype=np.uint32)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words, spawn_key=(step,))))


def batch_entropy(seed: int, epoch: int, sample_ids: np.ndarray, view: int,
                  step: int) -> list[Any]:
    """The assembled ``SeedSequence`` entropy of :func:`step_rng` for a batch of ids.

    Returns:
        Nine words: :func:`seed_entropy`'s eight (the ids' two as (B,) uint32 arrays, the rest
        ints shared by the batch), then the spawn key ``step``; the input of
        :func:`pcg64_states`.
    """
    ids = np.asarray(sample_ids, dtype=np.uint64)
    entropy: list[Any] = seed_entropy(seed, epoch, 0, view) + [step]
    entropy[4] = (ids & np.uint64(_WORD - 1)).astype(np.uint32)  # the ids' low words
    entropy[5] = (ids >> np.uint64(32)).astype(np.uint32)  # and high words
    return entropy


def draw_step(
    spec: AugmentationSpec,
    params: Any,
    *,
    seed: int,
    epoch: int,
    view: int,
    step: int,
    sample_ids: np.ndarray,
    n_samples: int,
    sample_rate: int,
) -> Draws:
    """The stacked draws of one step for a batch, each row from its own :func:`step_rng`.

    From :data:`BATCH_SEEDING_MIN_ROWS` rows on, the rows' generator states come from
    :func:`pcg64_states` (the same states, derived for the batch at once) and one generator is
    set to each in turn.
    """
    if len(sample_ids) < BATCH_SEEDING_MIN_ROWS:
        return stack_draws([
            spec.draw(step_rng(seed, epoch, int(sample_id), view, step), n_samples,
                      sample_rate, params)
            for sample_id in sample_ids
        ])
    rng = np.random.Generator(np.random.PCG64(0))
    draws = []
    for state in pcg64_states(batch_entropy(seed, epoch, sample_ids, view, step)):
        rng.bit_generator.state = state
        draws.append(spec.draw(rng, n_samples, sample_rate, params))
    return stack_draws(draws)


# --------------------------------------------------------------------------- argument checks


def check_augmenter_args(*, sample_rate: int, seed: int, first_step: int) -> None:
    """The constructor checks shared by ``Augmenter`` and ``BatchAugmenter``."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if first_step < 0:
        raise ValueError(f"first_step must be >= 0, got {first_step}")
    seed_entropy(seed, 0, 0, 0)  # seed range check


def check_call_args(sample_ids: np.ndarray, batch_size: int, *, seed: int, epoch: int,
                    view: int) -> np.ndarray:
    """The call checks shared by ``Augmenter`` and ``BatchAugmenter``: ids, epoch and view.

    Returns:
        The ids as an int64 array (see :func:`check_batch_ids`).
    """
    ids = check_batch_ids(sample_ids, batch_size)
    seed_entropy(seed, epoch, 0, view)  # epoch and view range checks
    return ids


def check_batch_ids(sample_ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Validate sample ids: (B,) non-negative integers → int64 array."""
    ids = np.asarray(sample_ids)
    if ids.ndim != 1 or ids.shape[0] != batch_size:
        raise ValueError(f"sample_ids must have shape ({batch_size},), got {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"sample_ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise ValueError(f"sample_ids must be >= 0, got {int(ids.min())}")
    return ids
