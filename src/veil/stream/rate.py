"""Fitting a chunk into the bytes ``--constant-rate`` leaves it.

A constant-rate stream pads every chunk to one size (`veil.stream.keying`), so a chunk must code
into that size. The encoder first spends its quality in the gentlest way it has, a higher rate
weight (`CodecModel.rd_codes` reuses more codes and sends fewer new ones), and only then drops
quantiser stages from the last (each sent as its null code, `CodecModel.null_codes`: the
picture loses its finest detail, not its layout). Each try codes the chunk with a fork of the
coder's state (`ContextCoder.fork`), so only the chunk that is sent moves it on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from veil.errors import InputError
from veil.stream.entropy import ContextCoder

__all__ = ["RATE_STEPS", "fit_chunk"]

RATE_STEPS = 5  # try the rate weight doubled up to this many times before dropping stages
LAST_RESORT_STEPS = 8  # with one stage left, go on doubling it this many times more


def fit_chunk(coder: ContextCoder, codes_at: Callable[[float], np.ndarray], rate_weight: float, keyframe: bool,
              room: int | None, null: np.ndarray) -> tuple[ContextCoder, np.ndarray, bytes, bool]:
    """Entropy-code a chunk within ``room`` coded bytes (None: any size) with a fork of ``coder``.

    A chunk that does not fit is searched again with the rate weight doubled (a finer trade of
    quality for size, up to ``RATE_STEPS`` times), then sent with quantiser stages dropped from the
    last one (each sent as its null code, `CodecModel.null_codes`), and with one stage left the
    weight goes on doubling (the picture freezes where it moves least) up to
    ``LAST_RESORT_STEPS`` times.
    Returns the coder state after the chunk, the codes as sent, the coded bytes and whether the
    chunk had to give up quality; raises `InputError` when nothing fits.
    """
    codes = {rate_weight: codes_at(rate_weight)}
    if room is None:
        return coder, codes[rate_weight], coder.encode(codes[rate_weight], keyframe), False
    q = null.shape[0]
    base = rate_weight or 1e-3  # a weight of 0 (the nearest codes) still needs one to give up size
    top = base * 2 ** RATE_STEPS
    plans = [(rate_weight, 0)] + [(base * 2 ** k, 0) for k in range(1, RATE_STEPS + 1)]
    plans += [(top, dropped) for dropped in range(1, q)]
    plans += [(top * 2 ** k, q - 1) for k in range(1, LAST_RESORT_STEPS + 1)]
    for w, dropped in plans:
        if w not in codes:
            codes[w] = codes_at(w)
        sent = codes[w]
        if dropped:
            sent = sent.copy()
            sent[..., q - dropped:] = null[q - dropped:]
        trial = coder.fork()
        data = trial.encode(sent, keyframe)
        if len(data) <= room:
            return trial, sent, data, (w, dropped) != (rate_weight, 0)
    raise InputError(f"--constant-rate is too low for this video: a chunk needs {len(data)} coded bytes at the "
                     f"lowest quality, and the rate leaves {room}")
