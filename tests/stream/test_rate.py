"""Fitting chunks into --constant-rate's size: quality given up in order, the coder moved on once."""

from __future__ import annotations

import numpy as np
import pytest

from veil.errors import InputError
from veil.stream.entropy import ContextCoder
from veil.stream.rate import fit_chunk

RNG = np.random.default_rng(0)
NOISE = RNG.integers(0, 64, (4, 12, 16, 3))


def codes_at(weight: float) -> np.ndarray:
    """Codes that grow simpler as the rate weight grows: noise below 0.01, then flatter and flatter."""
    if weight < 0.01:
        return NOISE
    out = NOISE.copy()
    out[:, :, : min(16, int(weight * 100))] = 5
    return out


def test_a_chunk_that_fits_is_sent_as_it_is() -> None:
    coder = ContextCoder(64, 3)
    after, sent, data, reduced = fit_chunk(coder, codes_at, 0.001, True, 10**6, np.zeros(3, int))
    assert not reduced and sent is NOISE and after is not coder and not coder.started
    np.testing.assert_array_equal(ContextCoder(64, 3).decode(data, NOISE.shape), NOISE)


def test_quality_is_given_up_until_the_chunk_fits_and_the_coder_moves_on_once() -> None:
    full = len(ContextCoder(64, 3).encode(NOISE, True))
    coder = ContextCoder(64, 3)
    after, sent, data, reduced = fit_chunk(coder, codes_at, 0.001, True, full // 3, np.zeros(3, int))
    assert reduced and len(data) <= full // 3 and not np.array_equal(sent, NOISE)
    assert not coder.started  # the original state is untouched: only the chunk sent moves a coder on
    receiver = ContextCoder(64, 3)
    np.testing.assert_array_equal(receiver.decode(data, sent.shape), sent)
    nxt = after.encode(sent, False)  # the returned state continues the stream
    np.testing.assert_array_equal(receiver.decode(nxt, sent.shape), sent)


def test_nothing_fits_a_room_smaller_than_the_coder_head() -> None:
    with pytest.raises(InputError, match="--constant-rate is too low"):
        fit_chunk(ContextCoder(64, 3), codes_at, 0.001, True, 8, np.zeros(3, int))
