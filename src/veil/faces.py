"""`Faces`: what was found in one frame (faces, and with ``--targets`` people and plates), as
parallel numpy arrays.

"Nothing found" is ``len(faces) == 0`` with arrays of shape ``(0, ...)``, never ``None``.
Landmarks are the five key points of MTCNN / CenterFace, in image coordinates and this order:
left eye, right eye, nose, left mouth corner, right mouth corner ("left" as seen in the image).
A person or a plate has no face landmarks: its five points sit at its box's centre.

Each detection has a kind (`KINDS`: face, person, plate, region). A person may carry a silhouette: a
bool mask, True where the person is, over its box grown by `SILHOUETTE_MARGIN` on each side
(`silhouette_frame`; the mask may be of any size, it is stretched to that frame when used).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Faces", "LANDMARK_NAMES", "KINDS", "FACE", "PERSON", "PLATE", "REGION", "centre_points", "SILHOUETTE_MARGIN",
           "silhouette_frame"]

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
# The kinds of target, by their index in `Faces.kinds` (``--targets faces,people,plates``).
# A region is a box a person drew in `veil review` (a name tag, a screen): masked as a box.
KINDS = ("face", "person", "plate", "region")
FACE, PERSON, PLATE, REGION = range(4)


# A silhouette covers its person's box grown by this share of the box's width and height on each
# side: a raised arm or loose hair reaches beyond a detector's box.
SILHOUETTE_MARGIN = 0.1


def silhouette_frame(box: np.ndarray) -> tuple[int, int, int, int]:
    """The pixels a person's silhouette covers (its box grown by `SILHOUETTE_MARGIN`), xyxy,
    not clipped to the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = SILHOUETTE_MARGIN * (x2 - x1), SILHOUETTE_MARGIN * (y2 - y1)
    fx1, fy1 = int(np.floor(x1 - mx)), int(np.floor(y1 - my))
    return fx1, fy1, max(fx1 + 1, int(np.ceil(x2 + mx))), max(fy1 + 1, int(np.ceil(y2 + my)))


def centre_points(boxes: np.ndarray) -> np.ndarray:
    """The stand-in landmarks of targets that are not faces: five times the box centre.

    Shape: boxes (N, 4) -> (N, 5, 2)
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    return np.repeat(centre[:, None, :], 5, axis=1)


def _f32(a: np.ndarray | list, shape_tail: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float32)
    if arr.size == 0:
        arr = arr.reshape((0, *shape_tail))
    return arr


@dataclass
class Faces:
    """Faces in one frame.

    Shape:
        - boxes: (N, 4) float32, xyxy in pixels
        - landmarks: (N, 5, 2) float32, xy in pixels
        - scores: (N,) float32 in [0, 1]
        - track_ids: (N,) int64, -1 where not tracked
        - filled: (N,) bool, True where a tracker kept a face alive without a detection
        - kinds: (N,) int8, an index into `KINDS` (0: face)
        - silhouettes: N entries, each None or an (h, w) bool mask over `silhouette_frame(box)`
    """

    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    track_ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    filled: np.ndarray = field(default=None)  # type: ignore[assignment]
    kinds: np.ndarray = field(default=None)  # type: ignore[assignment]
    silhouettes: tuple[np.ndarray | None, ...] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.boxes = _f32(self.boxes, (4,))
        self.landmarks = _f32(self.landmarks, (5, 2))
        self.scores = _f32(self.scores, ())
        n = len(self.boxes)
        self.track_ids = (np.full(n, -1, np.int64) if self.track_ids is None
                          else np.asarray(self.track_ids, np.int64).reshape(n))
        self.filled = (np.zeros(n, bool) if self.filled is None
                       else np.asarray(self.filled, bool).reshape(n))
        self.kinds = (np.zeros(n, np.int8) if self.kinds is None
                      else np.asarray(self.kinds, np.int8).reshape(n))
        self.silhouettes = (None,) * n if self.silhouettes is None else tuple(self.silhouettes)
        if len(self.silhouettes) != n:
            raise ValueError(f"silhouettes must have {n} entries, got {len(self.silhouettes)}")
        if self.boxes.shape != (n, 4):
            raise ValueError(f"boxes must be (N, 4), got {self.boxes.shape}")
        if self.landmarks.shape != (n, 5, 2):
            raise ValueError(f"landmarks must be ({n}, 5, 2), got {self.landmarks.shape}")
        if self.scores.shape != (n,):
            raise ValueError(f"scores must be ({n},), got {self.scores.shape}")

    @classmethod
    def empty(cls) -> Faces:
        return cls(np.zeros((0, 4)), np.zeros((0, 5, 2)), np.zeros((0,)))

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int | slice | np.ndarray) -> Faces:
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1) if index != -1 else slice(-1, None)
        picked = np.arange(len(self))[index]
        return Faces(self.boxes[index], self.landmarks[index], self.scores[index], self.track_ids[index],
                     self.filled[index], self.kinds[index], tuple(self.silhouettes[i] for i in picked))

    @classmethod
    def concatenate(cls, items: list[Faces]) -> Faces:
        items = [f for f in items if len(f)]
        if not items:
            return cls.empty()
        return cls(np.concatenate([f.boxes for f in items]), np.concatenate([f.landmarks for f in items]),
                   np.concatenate([f.scores for f in items]), np.concatenate([f.track_ids for f in items]),
                   np.concatenate([f.filled for f in items]), np.concatenate([f.kinds for f in items]),
                   tuple(m for f in items for m in f.silhouettes))

    def of_kind(self, kind: int) -> Faces:
        """The detections of one kind (`FACE`, `PERSON`, `PLATE`)."""
        return self[self.kinds == kind]

    def scaled(self, factor: float) -> Faces:
        """The same faces with coordinates multiplied by ``factor`` (detection at another size)."""
        return Faces(self.boxes * factor, self.landmarks * factor, self.scores, self.track_ids, self.filled,
                     self.kinds, self.silhouettes)

    def shifted(self, dx: float, dy: float) -> Faces:
        """The same faces moved by (dx, dy) pixels (detection in a crop, back to the frame)."""
        offset = np.array([dx, dy], np.float32)
        return Faces(self.boxes + np.tile(offset, 2), self.landmarks + offset, self.scores, self.track_ids,
                     self.filled, self.kinds, self.silhouettes)

    def clipped(self, width: int, height: int) -> Faces:
        """Boxes clipped to the frame; faces left with no area are dropped. A silhouette whose box
        was cut is dropped too (the whole box is then masked): it no longer matches its box."""
        boxes = self.boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        cut = (boxes != self.boxes).any(axis=1)
        out = self[keep]
        out.boxes = boxes[keep]
        out.silhouettes = tuple(None if c else m for c, m in zip(cut[keep], out.silhouettes))
        return out

    @property
    def sizes(self) -> np.ndarray:
        """Box side length (the larger of width and height), (N,)."""
        return np.maximum(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1])
