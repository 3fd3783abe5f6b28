"""The context-model coder and the audio-keyed seal: exact round trips, real savings, uniform bytes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from veil.stream.entropy import ContextCoder, EntropyError, empirical_bits, learn_prior
from veil.stream.keying import SealError, chunk_keys, open_chunk, seal_chunk


def _round_trip(chunks: list[np.ndarray], k: int, keyframes: list[bool]) -> list[bytes]:
    sender, receiver = ContextCoder(k, chunks[0].shape[-1]), ContextCoder(k, chunks[0].shape[-1])
    coded = []
    for codes, key in zip(chunks, keyframes):
        data = sender.encode(codes, key)
        back = receiver.decode(data, codes.shape)
        assert back.dtype == np.int64 and back.shape == codes.shape
        np.testing.assert_array_equal(back, codes)
        coded.append(data)
    return coded


def _scene(n: int, h: int, w: int, q: int, k: int, seed: int = 0) -> np.ndarray:
    """Codes like a picture's: flat regions, and a block that moves one cell a frame."""
    rng = np.random.default_rng(seed)
    base = np.repeat(np.repeat(rng.integers(0, k, (h // 4 + 1, w // 4 + 1, q)), 4, 0), 4, 1)[:h, :w]
    out = np.repeat(base[None], n, 0)
    for t in range(n):
        out[t, 2:6, t % (w - 4):t % (w - 4) + 4] = rng.integers(0, k, (4, 4, q))
    return out


@pytest.mark.parametrize(("shape", "k"), [((1, 5, 7, 1), 2), ((4, 9, 16, 4), 256), ((3, 6, 5, 2), 1024),
                                          ((8, 45, 80, 6), 256), ((2, 1, 1, 3), 8)])
def test_codes_to_bytes_to_codes_is_exact(shape: tuple, k: int) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, k, shape)
    scene = _scene(*shape, k) if shape[1] > 6 and shape[2] > 8 else noise
    _round_trip([noise, scene, noise[::-1].copy()], k, [True, False, False])


def test_a_chunk_continues_the_previous_one_until_the_next_keyframe() -> None:
    codes = _scene(24, 20, 32, 3, 64)
    chunks = [codes[i:i + 8] for i in range(0, 24, 8)]
    coded = _round_trip(chunks, 64, [True, False, True])
    assert len(coded[1]) < 0.5 * len(coded[0])  # the second chunk has no first frame to pay for
    receiver = ContextCoder(64, 3)
    with pytest.raises(EntropyError, match="keyframe"):  # joined mid-interval: refused
        receiver.decode(coded[1], chunks[1].shape)
    np.testing.assert_array_equal(receiver.decode(coded[2], chunks[2].shape), chunks[2])  # ... recovered here


def test_still_frames_cost_almost_nothing_and_noise_costs_its_entropy() -> None:
    rng = np.random.default_rng(1)
    first = rng.integers(0, 256, (1, 45, 80, 6))
    single = ContextCoder(256, 6).encode(first, True)
    still = ContextCoder(256, 6).encode(np.repeat(first, 8, 0), True)
    assert len(still) - len(single) < 8 * 45 * 80 * 0.02 / 8  # under 0.02 bits a cell for each still frame
    noise = rng.integers(0, 256, (8, 45, 80, 6))
    assert len(ContextCoder(256, 6).encode(noise, True)) * 8 < 1.05 * empirical_bits(noise, 256)
    assert empirical_bits(noise, 256) == pytest.approx(8 * noise.size, rel=2e-3)


def test_a_picture_with_structure_costs_less_than_its_zeroth_order_entropy() -> None:
    codes = _scene(8, 45, 80, 4, 256, seed=3)
    assert 8 * len(ContextCoder(256, 4).encode(codes, True)) < 0.3 * empirical_bits(codes, 256)


def test_damaged_or_misdeclared_coded_indices_raise() -> None:
    codes = _scene(2, 12, 16, 2, 16)
    data = ContextCoder(16, 2).encode(codes, True)
    with pytest.raises(EntropyError, match="expected"):
        ContextCoder(16, 2).decode(data, (2, 12, 17, 2))
    for cut in (3, len(data) - 4):
        with pytest.raises(EntropyError):
            ContextCoder(16, 2).decode(data[:cut], codes.shape)
    damaged = bytearray(data)
    damaged[-5] ^= 0x5A
    with pytest.raises(EntropyError):
        ContextCoder(16, 2).decode(bytes(damaged), codes.shape)


def test_noise_decodes_to_codes_when_not_strict() -> None:
    """The wrong key stream's words still decode (to codes drawn from the model), never raise."""
    codes = _scene(4, 12, 16, 2, 16)
    data = ContextCoder(16, 2).encode(codes, True)
    noise = data[:13] + np.random.default_rng(2).integers(0, 256, len(data) - 13, dtype=np.uint8).tobytes() + b"\x07"
    out = ContextCoder(16, 2).decode(noise, codes.shape, strict=False)
    assert out.shape == codes.shape and out.min() >= 0 and out.max() < 16


def test_the_first_chunk_must_be_a_keyframe_and_indices_must_fit() -> None:
    with pytest.raises(ValueError, match="keyframe"):
        ContextCoder(16, 2).encode(np.zeros((1, 4, 4, 2), np.int64), False)
    with pytest.raises(ValueError, match="lie in"):
        ContextCoder(16, 2).encode(np.full((1, 4, 4, 2), 16), True)


# -- the seal -------------------------------------------------------------------------------------
def _keys(audio: list[bytes], index: int = 0, key: bytes | None = None):
    return chunk_keys(b"d" * 32, 1234, index, audio, key)


def test_sealed_bytes_are_uniform_even_for_constant_input() -> None:
    coded = bytes(200_000)  # the most regular input there is
    sealed = seal_chunk(coded, _keys([b"tone"]))
    counts = np.bincount(np.frombuffer(sealed, np.uint8), minlength=256)
    assert chisquare(counts).pvalue > 1e-4


def test_seal_round_trip_and_what_the_keys_depend_on() -> None:
    coded = b"codes of one chunk" * 10
    keys = _keys([b"a", b"b"])
    assert open_chunk(seal_chunk(coded, keys), keys) == coded
    sealed = seal_chunk(coded, keys)
    for other in (_keys([b"a", b"c"]), _keys([b"ab"]), _keys([b"a", b"b"], index=1),
                  _keys([b"a", b"b"], key=b"k" * 32), chunk_keys(b"e" * 32, 1234, 0, [b"a", b"b"])):
        assert seal_chunk(coded, other) != sealed
        with pytest.raises(SealError, match="tag"):
            open_chunk(sealed, other)
        assert open_chunk(sealed, other, strict=False) != coded  # noise, not an error


def test_padding_is_hidden_and_checked() -> None:
    keys = _keys([b"x"])
    short, long_ = seal_chunk(b"a" * 10, keys, 300), seal_chunk(b"a" * 200, keys, 300)
    assert len(short) == len(long_) == 300
    assert open_chunk(short, keys) == b"a" * 10 and open_chunk(long_, keys) == b"a" * 200
    with pytest.raises(ValueError, match="fit"):
        seal_chunk(b"a" * 300, keys, 300)
    for at in (5, 150, 283):  # inside the length, the padding, the tag
        tampered = bytearray(short)
        tampered[at] ^= 1
        with pytest.raises(SealError):
            open_chunk(bytes(tampered), keys)


def test_a_learned_prior_saves_bytes_on_like_video_and_both_ends_must_share_it() -> None:
    train = [(_scene(8, 24, 32, 3, 64, seed=s), True) for s in range(4)]
    prior = learn_prior(train, 64, 3)
    assert prior["which"].shape == (3, 4, 5, 10) and prior["values"].shape == (3, 64) and prior["flags"].min() >= 1
    codes = _scene(8, 24, 32, 3, 64, seed=9)
    flat = ContextCoder(64, 3).encode(codes, True)
    learned = ContextCoder(64, 3, prior).encode(codes, True)
    assert len(learned) < 0.97 * len(flat)
    np.testing.assert_array_equal(ContextCoder(64, 3, prior).decode(learned, codes.shape), codes)
    with pytest.raises(EntropyError):  # a receiver without the prior cannot read it
        ContextCoder(64, 3).decode(learned, codes.shape)
    with pytest.raises(ValueError, match="prior"):
        ContextCoder(64, 4, prior)


def test_first_stage_moves_coded_by_nearness_in_the_codebook() -> None:
    """A changed first-stage code that moves to a near code costs less with the codebook's geometry."""
    rng = np.random.default_rng(4)
    book = np.sort(rng.normal(size=(64, 1)), 0) * np.ones((1, 4))  # codes on a line: i and i+1 are near
    codes = _scene(8, 24, 32, 2, 64, seed=5)
    codes[1:, ..., 0] = np.clip(codes[:1, ..., 0] + rng.integers(-2, 3, codes[1:, ..., 0].shape), 0, 63)  # small moves
    plain = ContextCoder(64, 2).encode(codes, True)
    sender, receiver = ContextCoder(64, 2, first_codebook=book), ContextCoder(64, 2, first_codebook=book)
    near = sender.encode(codes, True)
    assert len(near) < 0.9 * len(plain)
    np.testing.assert_array_equal(receiver.decode(near, codes.shape), codes)
    fork = sender.fork()
    assert fork.encode(codes, False) == sender.encode(codes, False)  # a fork moves on like the original
