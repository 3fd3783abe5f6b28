"""Lossless coding of the code indices: an adaptive context model driving an ANS coder.

The codes arrive in plain order (the hiding comes after, on the coded bytes: `veil.stream.keying`),
so the model sees what a picture's codes share with their neighbours and with the previous latent
frame. Per latent frame, in four passes over the cells of a 2x2 lattice (a cell's class is its
row and column parity: (0, 0), then (1, 1), then (0, 1), then (1, 0)), so that every pass after
the first sees decoded neighbours on all sides:

* **changed**: one binary symbol per cell, 1 where any stage's index differs from the previous
  latent frame's (`CodecModel.keep_previous` keeps or replaces a cell's codes as a whole). Its
  context: whether the cell changed in the previous latent frame (or there is none), the pass,
  and how many of its eight neighbours already decoded in this frame changed (0, 1, 2, 3+).
  The first frame after a keyframe has nothing to compare with: every cell is new.
* **which**: for each stage of a changed cell, the index among the *candidates* that it equals:
  the cell's own previous index, then the indices of its eight neighbours that are known (kept
  cells, and cells decoded in earlier passes), duplicates removed; or *escape* (an index none of
  them has). Most indices of a talking head, a wall or a desk repeat a neighbour's, so this small
  alphabet carries most of the picture.
* **escaped** indices: of the first stage, where the cell had a code in the frame before, by
  the rank of the new code among all codes ordered by their distance from the old one in the
  codebook (`first_codebook`; a changed first-stage code moves to a near one far more often
  than not); otherwise with the stage's own adaptive histogram. The distances are computed once
  in integers (the codebook in units of 1/4096) and sorted stably, so both ends agree exactly.

Every model is adaptive: integer counts, updated after each latent frame and kept across the
chunks of one keyframe interval (`ContextCoder` is the state both ends keep), so the coder needs
no side information and learns each scene as it goes. They start from a prior learned on the
training videos and stored in the model's checkpoint (`learn_prior`), or flat without one. Probabilities are formed from
the integer counts with one division each, which IEEE arithmetic makes identical on every machine:
both ends must agree bit for bit.

Why this and not a learned prior: a network over the previous frame's codes would predict more,
but costs a forward pass per frame on both ends; counting runs in a few milliseconds a frame in
numpy. Why ANS (``constriction.stream.stack.AnsCoder``) and not a range coder: any sequence of
words decodes under ANS (as samples from the model), so a receiver holding the wrong key stream
gets pictures of noise rather than an error, which is what the privacy benchmark measures; a
real stream is checked on the other hand by the chunk's MAC (`veil.stream.keying`) and by the
coder ending exactly empty.

Layout of a coded chunk: ``method u8 | L u16 | h u16 | w u16 | Q u8 | K u32 | keyframe u8 | words``
(``words``: the ANS coder's 32-bit words, little-endian).
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import constriction
import numpy as np

__all__ = ["ContextCoder", "EntropyError", "NEIGHBOURS", "empirical_bits", "learn_prior", "read_shape"]

_HEAD = struct.Struct("<BHHHBIB")
METHOD = 4
# Neighbour offsets (dy, dx): the candidates after the cell's own previous index, in their order
# (`CodecModel.rd_codes` looks at the same cells).
NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))
_PASS_OF_PARITY = np.array([[0, 2], [3, 1]])  # pass of a cell by (row % 2, column % 2)
PASSES = 4
SLOTS = 1 + len(NEIGHBOURS) + 1  # own previous, eight neighbours, escape
ESCAPE = SLOTS - 1
_FLAG_CONTEXTS = 3 * 3 * PASSES * 4
CHOICE_CONTEXTS = 5  # "which" is modelled by how many distinct candidates a cell has: 0, 1, 2, 3, 4+
_RESCALE = 1 << 16  # halve a model's counts past this total: recent statistics weigh more
PRIOR_WEIGHT, PRIOR_ROW = 16, 1024  # `learn_prior`: what a learned start weighs, in symbols seen
_FAMILY = constriction.stream.model.Categorical(perfect=False)


class EntropyError(ValueError):
    """A coded chunk does not decode to indices of the declared shape."""


def read_shape(data: bytes) -> tuple[tuple[int, int, int, int], int, bool]:
    """(L, h, w, Q), the codebook size and the keyframe flag a coded chunk declares."""
    try:
        method, L, h, w, q, k, keyframe = _HEAD.unpack_from(data)
    except struct.error as exc:
        raise EntropyError(f"coded indices are damaged: {exc}") from exc
    if method != METHOD or L == 0 or q == 0 or k < 2 or keyframe > 1:
        raise EntropyError(f"coded indices are damaged: method {method}, {L} frames, {q} stages, {k} codes")
    return (L, h, w, q), k, bool(keyframe)


def _rows(counts: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Probability rows from integer counts (zero where not ``valid``), as the coder takes them."""
    c = counts if valid is None else np.where(valid, counts, 0)
    return (c / c.sum(-1, keepdims=True)).astype(np.float32)


def _shifted(a: np.ndarray, dy: int, dx: int, fill: int) -> np.ndarray:
    """``out[y, x] = a[y + dy, x + dx]``, ``fill`` outside. Shape: (h, w, ...) -> same."""
    h, w = a.shape[:2]
    out = np.full_like(a, fill)
    out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
        a[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    return out


@dataclass
class _Models:
    """The adaptive counts of one keyframe interval, started from ``prior`` (or flat)."""

    codebook_size: int
    stages: int
    prior: dict[str, np.ndarray] | None = None
    limit: int = _RESCALE
    flags: np.ndarray = field(init=False)  # (contexts, 2)
    which: np.ndarray = field(init=False)  # (stages, passes, CHOICE_CONTEXTS, SLOTS)
    values: np.ndarray = field(init=False)  # (stages, K)
    nearness: np.ndarray = field(init=False)  # (K,): ranks of escaped first-stage indices (`ContextCoder`)

    def __post_init__(self) -> None:
        shapes = {"flags": (_FLAG_CONTEXTS, 2), "which": (self.stages, PASSES, CHOICE_CONTEXTS, SLOTS),
                  "values": (self.stages, self.codebook_size), "nearness": (self.codebook_size,)}
        for name, shape in shapes.items():
            start = None if self.prior is None else self.prior.get(name)
            if start is not None and (start.shape != shape or start.min() < 1):
                raise ValueError(f"the coder's prior {name!r} has shape {start.shape}, expected {shape} of counts >= 1")
            setattr(self, name, np.ones(shape, np.int64) if start is None else np.array(start, np.int64))

    def rescale(self) -> None:
        for counts in (self.flags, self.which, self.values, self.nearness):
            big = counts.sum(-1) > self.limit
            counts[big] = (counts[big] + 1) // 2


def learn_prior(chunks: Iterable[tuple[np.ndarray, bool]], codebook_size: int, stages: int,
                first_codebook: np.ndarray | None = None, weight: int = PRIOR_WEIGHT) -> dict[str, np.ndarray]:
    """Start counts for `ContextCoder` from typical codes: the statistics of coding ``chunks``
    ((L, h, w, Q) codes, keyframe) in order, each model's row scaled to ``weight`` symbols seen
    per symbol of its alphabet, at most ``PRIOR_ROW`` (and at least 1 a symbol), so that a
    keyframe interval starts from what such video looks like and still adapts within a few frames.
    Stored in the codec checkpoint (`veil.stream.train`), so both ends use the same.
    """
    coder = ContextCoder(codebook_size, stages, first_codebook=first_codebook)
    coder.limit = 1 << 62  # learn totals: no halving
    seen: list[_Models] = []
    for codes, keyframe in chunks:
        if keyframe and coder.started:
            seen.append(coder.models)
        coder.encode(codes, keyframe)
    if not coder.started:
        raise ValueError("no codes to learn a prior from")
    seen.append(coder.models)
    out = {}
    for name in ("flags", "which", "values", "nearness"):
        counts = sum(getattr(m, name) - 1 for m in seen).astype(np.float64)  # minus the flat start
        total = min(weight * counts.shape[-1], PRIOR_ROW)
        scaled = np.floor(counts * total / np.maximum(counts.sum(-1, keepdims=True), 1))
        out[name] = np.maximum(scaled, 1).astype(np.int64)
    return out


class _Frame:
    """What both ends know while one latent frame is coded, pass by pass.

    ``codes`` (h, w, Q) holds the frame's known indices (-1 where still unknown); ``changed`` (h, w)
    the known flags (-1 unknown).
    """

    def __init__(self, prev: np.ndarray | None, prev_changed: np.ndarray | None, grid: tuple[int, int], q: int):
        self.prev = prev
        h, w = grid
        self.pass_of = _PASS_OF_PARITY[np.arange(h)[:, None] % 2, np.arange(w)[None, :] % 2]
        self.codes = np.full((h, w, q), -1, np.int64)
        self.changed = np.full((h, w), -1, np.int64)
        if prev_changed is None:
            self.prev_state = np.full((h, w), 2 * 3, np.int64)
        else:  # the cell's own flag in the previous frame, and how many of its neighbours changed there (0, 1-2, 3+)
            around = sum((_shifted(prev_changed, dy, dx, 0) == 1).astype(np.int64) for dy, dx in NEIGHBOURS)
            self.prev_state = prev_changed.astype(np.int64) * 3 + np.digitize(around, (1, 3))

    def flag_context(self, cells: np.ndarray, p: int) -> np.ndarray:
        """Context of the changed flags of the cells (a boolean mask) of pass ``p``."""
        known = sum((_shifted(self.changed, dy, dx, -1) == 1).astype(np.int64) for dy, dx in NEIGHBOURS)
        return ((self.prev_state * PASSES + p) * 4 + np.minimum(known, 3))[cells]

    def set_flags(self, cells: np.ndarray, flags: np.ndarray) -> None:
        self.changed[cells] = flags
        if self.prev is not None:  # a kept cell's codes are its previous ones: known at once
            kept = cells.copy()
            kept[cells] = flags == 0
            self.codes[kept] = self.prev[kept]

    def candidates(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate indices of the changed cells of a pass, and which of them are usable.

        Shape: cells (h, w) bool with n True -> cand (n, Q, SLOTS - 1), valid (n, Q, SLOTS) bool
        (escape always valid; a candidate is valid when known and not equal to an earlier one).
        """
        own = self.prev[cells] if self.prev is not None else np.full((int(cells.sum()), self.codes.shape[2]), -1)
        cand = np.stack([own] + [_shifted(self.codes, dy, dx, -1)[cells] for dy, dx in NEIGHBOURS], -1)
        valid = cand >= 0
        for j in range(1, cand.shape[-1]):
            valid[..., j] &= ~(cand[..., :j] == cand[..., j:j + 1]).any(-1)
        return cand, np.concatenate([valid, np.ones((*valid.shape[:-1], 1), bool)], -1)


class ContextCoder:
    """One end's coder state: the previous latent frame's codes and flags, and the adaptive counts.

    The sender and the receiver each hold one and feed it the same chunks in the same order; a
    keyframe chunk starts afresh (`encode` / `decode` with ``keyframe=True``), so a receiver can
    begin at any keyframe.
    """

    def __init__(self, codebook_size: int, stages: int, prior: dict[str, np.ndarray] | None = None,
                 first_codebook: np.ndarray | None = None) -> None:
        if not 1 < codebook_size <= 1 << 16 or not 0 < stages <= 255:
            raise ValueError(f"codebook size {codebook_size} and {stages} stages are out of range")
        self.order = self.rank = None
        if first_codebook is not None:
            if first_codebook.shape[0] != codebook_size:
                raise ValueError(f"a first codebook of {first_codebook.shape[0]} codes for a coder of {codebook_size}")
            # integers, so that the order is exact on every machine (a float sum may round otherwise)
            book = np.round(np.asarray(first_codebook, np.float64) * 4096).astype(np.int64)
            dist = ((book[:, None] - book[None]) ** 2).sum(-1)
            self.order = np.argsort(dist, 1, kind="stable")  # order[a]: the codes by distance from a
            self.rank = np.argsort(self.order, 1, kind="stable")  # rank[a, b]: where b stands in order[a]
        self.codebook_size, self.stages, self.prior, self.limit = codebook_size, stages, prior, _RESCALE
        _Models(codebook_size, stages, prior)  # a prior of the wrong shape fails here, not mid-stream
        self.models: _Models | None = None
        self.prev: np.ndarray | None = None
        self.prev_changed: np.ndarray | None = None
        self._strict = True

    def fork(self) -> ContextCoder:
        """A copy whose state moves on independently (the tables it only reads are shared)."""
        twin = copy.copy(self)
        twin.models = copy.deepcopy(self.models)
        return twin  # prev and prev_changed are replaced, never changed in place

    @property
    def started(self) -> bool:
        """Whether a keyframe has been coded (a non-keyframe chunk needs one before it)."""
        return self.models is not None

    # -- one latent frame, shared by both directions ----------------------------------------------
    def _frame(self, grid: tuple[int, int], codes: np.ndarray | None, coder: constriction.stream.stack.AnsCoder,
               ops: list | None) -> np.ndarray:
        """Code one latent frame. Encoding: ``codes`` given, symbols appended to ``ops`` (in decoding
        order); decoding: ``codes`` None, symbols read from ``coder``. Returns the frame's codes."""
        m = self.models
        f = _Frame(self.prev, self.prev_changed, grid, self.stages)
        decode = codes is None
        truth_changed = None if decode else (
            np.ones(grid, np.int64) if self.prev is None else (codes != self.prev).any(-1).astype(np.int64))

        def code(symbols: np.ndarray | None, probs: np.ndarray, count: int = 0) -> np.ndarray:
            """Code ``symbols`` with a probability row each (probs (n, A)), or ``count`` symbols with
            one row for all (probs (A,))."""
            if decode:
                out = coder.decode(_FAMILY, probs) if probs.ndim == 2 else \
                    coder.decode(constriction.stream.model.Categorical(probs, perfect=False), count)
                return np.asarray(out, np.int64)
            ops.append((symbols.astype(np.int32), probs))
            return symbols

        flag_updates, which_updates, value_updates, rank_updates = [], [], [], []
        for p in range(PASSES):
            cells = f.pass_of == p
            if self.prev is None:
                flags = np.ones(int(cells.sum()), np.int64)
            else:
                ctx = f.flag_context(cells, p)
                flags = code(None if decode else truth_changed[cells], _rows(m.flags[ctx]))
                flag_updates.append((ctx, flags))
            f.set_flags(cells, flags)
            todo = cells & (f.changed == 1)
            if not todo.any():
                continue
            cand, valid = f.candidates(todo)  # (n, Q, 9), (n, Q, 10)
            group = np.broadcast_to(np.arange(self.stages)[None, :], valid.shape[:2])
            choices = np.minimum(valid[..., :-1].sum(-1), CHOICE_CONTEXTS - 1)  # (n, Q)
            rows = _rows(m.which[group, p, choices], valid).reshape(-1, SLOTS)
            if decode:
                which = code(None, rows).reshape(valid.shape[:2])
            else:
                v = codes[todo]  # (n, Q)
                hit = (cand == v[..., None]) & valid[..., :-1]
                which = np.where(hit.any(-1), hit.argmax(-1), ESCAPE)
                code(which.ravel(), rows)
            which_updates.append((p, choices, which))
            values = np.take_along_axis(cand, np.minimum(which, ESCAPE - 1)[..., None], -1)[..., 0]
            if decode and not self._strict:  # words that are noise may pick a candidate that is not there
                values = np.maximum(values, 0)
            for q in range(self.stages):
                esc = which[:, q] == ESCAPE
                near = esc & (cand[:, q, 0] >= 0) if q == 0 and self.order is not None else np.zeros_like(esc)
                plain = esc & ~near
                if plain.any():
                    values[plain, q] = code(None if decode else codes[todo][plain, q], _rows(m.values[q]),
                                            int(plain.sum()))
                    value_updates.append((q, values[plain, q]))
                if near.any():  # by rank of nearness to the cell's previous code, in the codebook
                    ref = cand[near, q, 0]
                    rank = code(None if decode else self.rank[ref, codes[todo][near, q]], _rows(m.nearness),
                                int(near.sum()))
                    values[near, q] = self.order[ref, rank]
                    rank_updates.append(rank)
            if values.size and (values.min() < 0 or values.max() >= self.codebook_size):
                raise EntropyError("coded indices are damaged: an index outside the codebook")
            f.codes[todo] = values
        # the counts learn from this frame only now: every symbol of it was coded with the same models
        for ctx, flags in flag_updates:
            np.add.at(m.flags, (ctx, flags), 1)
        for p, choices, which in which_updates:
            np.add.at(m.which, (np.broadcast_to(np.arange(self.stages), which.shape), p, choices, which), 1)
        for q, values in value_updates:
            np.add.at(m.values[q], values, 1)
        for rank in rank_updates:
            np.add.at(m.nearness, rank, 1)
        m.rescale()
        self.prev, self.prev_changed = f.codes, f.changed
        return f.codes

    # -- chunks -----------------------------------------------------------------------------------
    def encode(self, indices: np.ndarray, keyframe: bool) -> bytes:
        """Code one chunk's indices; a keyframe resets the state first.

        Shape: indices (L, h, w, Q) integers in [0, codebook_size) -> bytes
        """
        L, h, w, q = indices.shape
        if q != self.stages or L == 0 or not (0 < h < 1 << 16 and 0 < w < 1 << 16):
            raise ValueError(f"codes of shape {indices.shape} for a coder of {self.stages} stages")
        if indices.min() < 0 or indices.max() >= self.codebook_size:
            raise ValueError(f"indices must lie in [0, {self.codebook_size})")
        if keyframe:
            self.reset()
        elif not self.started:
            raise ValueError("the first chunk must be a keyframe")
        ops: list = []
        for t in range(L):
            self._frame((h, w), np.asarray(indices[t], np.int64), None, ops)
        coder = constriction.stream.stack.AnsCoder()
        for symbols, probs in reversed(ops):
            if probs.ndim == 2:
                coder.encode_reverse(symbols, _FAMILY, probs)
            else:
                coder.encode_reverse(symbols, constriction.stream.model.Categorical(probs, perfect=False))
        words = coder.get_compressed().astype("<u4").tobytes()
        return _HEAD.pack(METHOD, L, h, w, q, self.codebook_size, int(keyframe)) + words

    def decode(self, data: bytes, expect: tuple[int, int, int, int], strict: bool = True) -> np.ndarray:
        """Inverse of `encode`. Shape: -> (L, h, w, Q) int64.

        ``expect``: the shape the caller needs; a chunk that declares another is refused before it
        is decoded. ``strict`` False decodes whatever the words are (the privacy experiment of
        decoding with the wrong key stream) instead of refusing words that do not end exactly.
        """
        if strict:
            shape, k, keyframe = read_shape(data)
            if shape != tuple(expect) or k != self.codebook_size:
                raise EntropyError(f"codes of shape {shape} from {k} codes, expected {tuple(expect)} "
                                   f"from {self.codebook_size}")
        else:  # noise in place of the head too: take the shape asked for
            shape, keyframe = tuple(expect), not self.started
        body = data[_HEAD.size:]
        if len(body) % 4:
            if strict:
                raise EntropyError("coded indices are damaged: not whole 32-bit words")
            body = body[:len(body) // 4 * 4]
        if keyframe:
            self.reset()
        elif not self.started:
            raise EntropyError("the chunk continues a keyframe interval this receiver has not seen")
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(body, "<u4").astype(np.uint32), seal=not strict)
        L, h, w, _ = shape
        self._strict = strict
        try:
            out = np.stack([self._frame((h, w), None, coder, None) for _ in range(L)])
        except (ValueError, RuntimeError) as exc:  # the coder's own refusal of words that do not decode
            if isinstance(exc, EntropyError):
                raise
            raise EntropyError(f"coded indices are damaged: {exc}") from exc
        finally:
            self._strict = True
        if strict and not coder.is_empty():
            raise EntropyError("coded indices are damaged: words left over")
        return out

    def reset(self) -> None:
        self.models = _Models(self.codebook_size, self.stages, self.prior, self.limit)
        self.prev = self.prev_changed = None


def empirical_bits(indices: np.ndarray, codebook_size: int) -> float:
    """Zeroth-order entropy of the indices in bits (per stage histogram), a reference for the coder."""
    total = 0.0
    for stage in np.moveaxis(indices, -1, 0):
        counts = np.bincount(stage.ravel(), minlength=codebook_size).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        total += float(-(counts[counts > 0] * np.log2(p)).sum())
    return total
