"""A procedurally generated action / privacy benchmark, so that the trade-off is measurable anywhere.

Each clip shows one stick figure on a random noisy background. The *action* is only a motion pattern
(walk right, walk left, jump, wave, stand, circle); the *private attributes* are only appearance and are
drawn independently of the action, each positive with probability 1/2:

- ``face``: a face-like texture (two eyes, a mouth) on the head, otherwise the back of the head (hair);
- ``skin_tone``: light or dark skin on head and arms;
- ``clothing``: a red or a blue shirt;
- ``pattern``: a striped or a plain shirt.

Two attributes are fine texture (which blur and downsampling remove) and two are colour (which they
keep), as in real footage where blurring hides a face but not skin colour or clothes. Because the
attributes are independent of the action, a perfect privacy-preserving model can keep all of the
action accuracy while an attacker is reduced to chance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from veil.errors import InputError

__all__ = ["ACTIONS", "ATTRIBUTES", "SyntheticSet", "render_clip", "make_synthetic"]

ACTIONS = ("walk_right", "walk_left", "jump", "wave", "stand", "circle")
ATTRIBUTES = ("face", "skin_tone", "clothing", "pattern")

_SKIN = {0: (225, 185, 150), 1: (110, 70, 45)}
_SHIRT = {0: (200, 45, 45), 1: (45, 70, 200)}
_TROUSERS = (60, 60, 70)
_HAIR = (40, 30, 25)


@dataclass(frozen=True)
class SyntheticSet:
    """Clips with their labels, as parallel arrays.

    Shape:
        videos: (M, T, H, W, 3) uint8 RGB; actions: (M,) int64; attributes: (M, 4) int64 in {0, 1}.
    """

    videos: np.ndarray
    actions: np.ndarray
    attributes: np.ndarray

    def __post_init__(self) -> None:
        m = len(self.videos)
        if len(self.actions) != m or len(self.attributes) != m:
            raise ValueError("videos, actions and attributes must have the same length")

    def __len__(self) -> int:
        return len(self.videos)


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 15) -> np.ndarray:
    return np.clip(np.array(colour) + rng.integers(-amount, amount + 1, size=3), 0, 255)


def _trajectory(rng: np.random.Generator, action: str, frames: int, size: int,
                unit: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame offsets (dx, dy) of the figure and how far the arms are lifted, in pixels."""
    t = np.arange(frames, dtype=np.float64)
    zero = np.zeros(frames)
    phase = rng.uniform(0, 2 * np.pi)
    if action in ("walk_right", "walk_left"):
        speed = rng.uniform(0.8, 1.1) * unit * 16 / frames
        dx = speed * t if action == "walk_right" else -speed * t
        return dx, zero, zero
    if action == "jump":
        height = rng.uniform(4.0, 6.0) * unit
        return zero, -height * np.abs(np.sin(np.pi * t / (frames / 2) + phase / 4)), zero
    if action == "wave":  # both arms swing from the sides to above the head and back
        lift = rng.uniform(7.0, 9.0) * unit
        return zero, zero, lift * (0.5 - 0.5 * np.cos(2 * np.pi * t / (frames / 2) + phase))
    if action == "stand":
        return zero, zero, zero
    if action == "circle":
        r = rng.uniform(4.0, 5.0) * unit
        a = 2 * np.pi * t / frames + phase
        return r * np.cos(a), r * np.sin(a), zero
    raise InputError(f"unknown synthetic action {action!r}; known: {', '.join(ACTIONS)}")


def _draw_figure(frame: np.ndarray, x: int, y: int, u: float, attrs: np.ndarray, colours: dict,
                 arm_lift: int, stride: int) -> None:
    """Draw the figure with the top-left of its head at (x, y), in place."""
    s = lambda v: max(1, round(v * u))  # noqa: E731 - size in pixels at this scale
    head, torso_w, torso_h, arm_w, leg_h = s(5), s(7), s(7), s(2), s(5)
    hx = x + (torso_w - head) // 2

    def rect(x0: int, y0: int, w: int, h: int, colour: np.ndarray) -> None:
        x1, y1 = max(x0, 0), max(y0, 0)
        x2, y2 = min(x0 + w, frame.shape[1]), min(y0 + h, frame.shape[0])
        if x2 > x1 and y2 > y1:
            frame[y1:y2, x1:x2] = colour

    rect(hx, y, head, head, colours["skin"])
    if attrs[0]:  # face: eyes and mouth
        rect(hx + s(1), y + s(1), s(1), s(1), colours["dark"])
        rect(hx + head - 2 * s(1), y + s(1), s(1), s(1), colours["dark"])
        rect(hx + s(1), y + s(3), head - 2 * s(1), s(1), colours["dark"])
    else:  # back of the head: hair over the upper part, the neck still shows the skin
        rect(hx, y, head, s(3), colours["hair"])
    ty = y + head
    rect(x, ty, torso_w, torso_h, colours["shirt"])
    if attrs[3]:  # stripes across the shirt
        for row in range(0, torso_h, 2 * s(1)):
            rect(x, ty + row, torso_w, s(1), colours["stripe"])
    # Sleeves in the shirt colour keep the arms visible on any background; the hands show the skin.
    for ax in (x - arm_w, x + torso_w):
        rect(ax, ty - arm_lift, arm_w, s(5), colours["shirt"])
        rect(ax, ty - arm_lift + (s(5) if not arm_lift else -s(1)), arm_w, s(1), colours["skin"])
    stride_px = stride * s(1)
    rect(x + s(1) - stride_px, ty + torso_h, s(2), leg_h, colours["trousers"])
    rect(x + torso_w - s(3) + stride_px, ty + torso_h, s(2), leg_h, colours["trousers"])


def render_clip(rng: np.random.Generator, action: int, attrs: np.ndarray, frames: int = 16,
                size: int = 32) -> np.ndarray:
    """One clip of the figure doing ``ACTIONS[action]`` with the given attributes.

    Shape:
        attrs: (4,) in {0, 1}. Returns (frames, size, size, 3) uint8 RGB.
    """
    if size < 24:
        raise InputError(f"synthetic clips need at least 24 px, got {size}")
    u = size / 32
    name = ACTIONS[action]
    base = rng.uniform(70, 190)
    background = np.clip(base + rng.uniform(-25, 25, size=3) + rng.normal(0, 12, (size, size, 3)), 0, 255)
    shirt = _jitter(rng, _SHIRT[int(attrs[2])])
    colours = {
        "skin": _jitter(rng, _SKIN[int(attrs[1])]), "shirt": shirt,
        "stripe": np.clip(shirt * 0.35 + 160, 0, 255), "trousers": _jitter(rng, _TROUSERS, 8),
        "hair": _jitter(rng, _HAIR, 8), "dark": np.array([20, 15, 15]),
    }
    dx, dy, arm = _trajectory(rng, name, frames, size, u)
    fig_w, fig_h = round(11 * u), round(22 * u)
    margin = round(2 * u)
    lo_x = margin - min(dx.min(), 0)
    hi_x = size - fig_w - margin - max(dx.max(), 0)
    lo_y = margin - min(dy.min(), 0)
    hi_y = size - fig_h - margin - max(dy.max(), 0)
    x0 = rng.uniform(lo_x, max(hi_x, lo_x))
    y0 = rng.uniform(lo_y, max(hi_y, lo_y))
    walking = name in ("walk_right", "walk_left")
    clip = np.empty((frames, size, size, 3), np.uint8)
    for f in range(frames):
        frame = background.copy()
        stride = (f // 2) % 2 if walking else 0
        _draw_figure(frame, round(x0 + dx[f]) + round(2 * u), round(y0 + dy[f]), u, attrs, colours,
                     round(arm[f]), stride)
        clip[f] = np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8)
    return clip


def make_synthetic(count: int, frames: int = 16, size: int = 32, seed: int = 0) -> SyntheticSet:
    """``count`` clips with actions cycling through `ACTIONS` and independent random attributes."""
    if count < 1:
        raise InputError(f"count must be positive, got {count}")
    rng = np.random.default_rng(seed)
    actions = np.arange(count) % len(ACTIONS)
    rng.shuffle(actions)
    attributes = rng.integers(0, 2, size=(count, len(ATTRIBUTES)))
    videos = np.stack([render_clip(rng, int(a), attributes[i], frames, size)
                       for i, a in enumerate(actions)])
    return SyntheticSet(videos, actions.astype(np.int64), attributes.astype(np.int64))
