"""The batched seeding gives numpy's own SeedSequence → PCG64 states, to the bit."""

from __future__ import annotations

import numpy as np
import pytest

from clar_ray.augment import AUGMENTATIONS, seeding
from clar_ray.augment.presets import build_params, get_spec


@pytest.mark.parametrize("n_entropy", [4, 5, 9, 12])
def test_seed_sequence_words_are_numpys(n_entropy: int) -> None:
    rng = np.random.default_rng(n_entropy)
    rows = 6
    # Words shared by the batch (ints) and the rows' own (arrays), mixed, extremes included.
    entropy = [int(rng.integers(0, 2**32)) if i % 2 else
               rng.integers(0, 2**32, rows, dtype=np.uint64).astype(np.uint32)
               for i in range(n_entropy)]
    entropy[0][:2] = [0, 2**32 - 1]
    words = seeding.seed_sequence_words(entropy, 8)
    for row in range(rows):
        row_entropy = np.array([w if isinstance(w, int) else w[row] for w in entropy], np.uint32)
        expected = np.random.SeedSequence(row_entropy).generate_state(8, np.uint32)
        assert [int(np.broadcast_to(w, (rows,))[row]) for w in words] == expected.tolist()


def test_seed_sequence_needs_a_full_pool() -> None:
    with pytest.raises(ValueError, match="at least 4 words, got 3"):
        seeding.seed_sequence_words([1, 2, 3], 8)


@pytest.mark.parametrize(("seed", "epoch", "view", "step"),
                         [(0, 0, 0, 0), (7, 3, 1, 2), (2**64 - 1, 2**40, 1, 9)])
def test_batched_generator_states_are_those_of_step_rng(seed: int, epoch: int, view: int,
                                                        step: int) -> None:
    ids = np.array([0, 1, 5, 2**32 - 1, 2**32, 2**63 - 1, 123456789], np.int64)
    states = list(seeding.pcg64_states(seeding.batch_entropy(seed, epoch, ids, view, step)))
    assert len(states) == len(ids)
    for sample_id, state in zip(ids, states):
        expected = seeding.step_rng(seed, epoch, int(sample_id), view, step)
        assert state == expected.bit_generator.state


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_a_batch_draws_what_its_rows_draw_alone(name: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    spec, params = get_spec(name), build_params(name, "paper", None)
    ids = np.arange(seeding.BATCH_SEEDING_MIN_ROWS + 3) * 7919 + 11
    kwargs = {"seed": 5, "epoch": 4, "view": 1, "step": 2, "sample_ids": ids,
              "n_samples": 4000, "sample_rate": 16000}
    batched = seeding.draw_step(spec, params, **kwargs)
    monkeypatch.setattr(seeding, "BATCH_SEEDING_MIN_ROWS", 10**9)
    one_by_one = seeding.draw_step(spec, params, **kwargs)
    assert batched.keys() == one_by_one.keys()
    for key in batched:
        np.testing.assert_array_equal(batched[key], one_by_one[key], err_msg=key)
