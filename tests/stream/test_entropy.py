"""Entropy coding of code indices and the audio-keyed permutation: exact round trips, real savings."""

from __future__ import annotations

import numpy as np
import pytest

from veil.stream.entropy import EntropyError, decode_indices, empirical_bits, encode_indices
from veil.stream.keying import chunk_key, chunk_scramble, scramble, unscramble


@pytest.mark.parametrize(("shape", "k"), [((1, 5, 7, 1), 2), ((4, 9, 16, 4), 256), ((3, 6, 5, 2), 1024),
                                          ((8, 90, 160, 4), 256), ((2, 0, 4, 1), 8)])
def test_codes_to_bytes_to_codes_is_exact(shape: tuple, k: int) -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, k, shape)
    codes[1:, : shape[1] // 2] = codes[:1, : shape[1] // 2]  # half the picture static
    back = decode_indices(encode_indices(codes, k))
    assert back.dtype == np.int64 and back.shape == codes.shape
    np.testing.assert_array_equal(back, codes)


def test_static_frames_cost_almost_nothing_and_noise_costs_its_entropy() -> None:
    rng = np.random.default_rng(1)
    first = rng.integers(0, 256, (1, 90, 160, 4))
    static = encode_indices(np.repeat(first, 8, 0), 256)
    single = encode_indices(first, 256)
    assert len(static) < 1.02 * len(single)  # seven repeated frames add under 2 %
    noise = rng.integers(0, 256, (8, 90, 160, 4))
    assert len(encode_indices(noise, 256)) * 8 < 1.01 * empirical_bits(noise, 256)  # incompressible
    assert empirical_bits(noise, 256) == pytest.approx(8 * noise.size, rel=2e-3)


def test_damaged_coded_indices_raise() -> None:
    data = bytearray(encode_indices(np.zeros((2, 4, 4, 1), np.int64), 4))
    data[-3] ^= 0xFF
    with pytest.raises(EntropyError):
        decode_indices(bytes(data))


def test_scramble_is_a_keyed_bijection() -> None:
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 256, (2, 9, 16, 4))
    right = chunk_scramble(chunk_key(7, 0, [b"audio", b"bytes"]), 4, 256, (9, 16))
    wrong = chunk_scramble(chunk_key(7, 0, [b"other", b"audio"]), 4, 256, (9, 16))
    sent = scramble(codes, right)
    np.testing.assert_array_equal(unscramble(sent, right), codes)
    assert (unscramble(sent, wrong) == codes).mean() < 0.02  # 1/256 by chance
    assert (sent == codes).mean() < 0.02
    # Equal indices stay equal within a chunk, so the temporal transform keeps its gain.
    assert np.array_equal(np.sort((sent[0] == sent[1]).ravel()), np.sort((codes[0] == codes[1]).ravel()))
    assert ((sent[0] == sent[1]).sum(), (sent[0] != sent[1]).sum()) == ((codes[0] == codes[1]).sum(),
                                                                      (codes[0] != codes[1]).sum())
    assert chunk_key(7, 1, [b"audio"]) != chunk_key(7, 0, [b"audio"]) != chunk_key(8, 0, [b"audio"])
    with pytest.raises(ValueError, match="do not fit"):
        scramble(codes[:, :8], right)


def test_scrambled_codes_keep_no_spatial_layout() -> None:
    """A smooth code map (a posterised picture) must not survive as one: neighbours stop agreeing."""
    yy, xx = np.mgrid[0:90, 0:160]
    picture = np.stack([(yy // 10) * 16 + xx // 10, (xx // 20) * 8 + yy // 15, (yy + xx) // 4, yy // 3], -1) % 256
    codes = np.repeat(picture[None], 4, 0)

    def neighbours_agree(c: np.ndarray) -> float:
        return float(np.mean(c[:, :, 1:] == c[:, :, :-1]))

    sent = scramble(codes, chunk_scramble(chunk_key(3, 0, [b"sound"]), 4, 256, (90, 160)))
    assert neighbours_agree(codes) > 0.8
    assert neighbours_agree(sent) < 0.1
    # a static picture stays static within the chunk, and the next chunk's order is another one
    assert np.array_equal(sent[0], sent[3])
    other = scramble(codes, chunk_scramble(chunk_key(3, 1, [b"sound"]), 4, 256, (90, 160)))
    assert (other[0] == sent[0]).all(-1).mean() < 0.05


def test_sent_codes_are_uniform_whatever_the_codes() -> None:
    """The per-cell offsets are a one-time pad: a frame of a few codes is sent as uniform noise."""
    rng = np.random.default_rng(4)
    k, grid = 64, (45, 80)
    codes = np.where(rng.random((3, *grid, 2)) < 0.9, 5, 9)  # two codes, one of them 90% of the cells
    codes[2] = codes[1]
    codes[2, :3] = 17  # three rows change in the last frame
    s = chunk_scramble(chunk_key(5, 0, [b"sound"]), 2, k, grid)
    sent = scramble(codes, s)
    for frame in sent:
        counts = np.bincount(frame.ravel(), minlength=k)
        expected = frame.size / k
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 130  # chi-square with 63 degrees of freedom: p < 1e-6 above 130
    assert len(np.unique(codes[0])) == 2
    # cells that keep their codes keep their sent values, cells that change do not
    kept = (codes[1] == codes[2]).reshape(-1, 2)[s.positions]
    np.testing.assert_array_equal((sent[1] == sent[2]).reshape(-1, 2), kept)
    assert not kept.all()
