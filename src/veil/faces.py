"""`Faces`: the faces found in one frame, as parallel numpy arrays.

"No face" is ``len(faces) == 0`` with arrays of shape ``(0, ...)``, never ``None``.
Landmarks are the five key points of MTCNN / CenterFace, in image coordinates and this order:
left eye, right eye, nose, left mouth corner, right mouth corner ("left" as seen in the image).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Faces", "LANDMARK_NAMES"]

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


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
    """

    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    track_ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    filled: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.boxes = _f32(self.boxes, (4,))
        self.landmarks = _f32(self.landmarks, (5, 2))
        self.scores = _f32(self.scores, ())
        n = len(self.boxes)
        self.track_ids = (np.full(n, -1, np.int64) if self.track_ids is None
                          else np.asarray(self.track_ids, np.int64).reshape(n))
        self.filled = (np.zeros(n, bool) if self.filled is None
                       else np.asarray(self.filled, bool).reshape(n))
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
        return Faces(self.boxes[index], self.landmarks[index], self.scores[index],
                     self.track_ids[index], self.filled[index])

    @classmethod
    def concatenate(cls, items: list[Faces]) -> Faces:
        items = [f for f in items if len(f)]
        if not items:
            return cls.empty()
        return cls(np.concatenate([f.boxes for f in items]), np.concatenate([f.landmarks for f in items]),
                   np.concatenate([f.scores for f in items]), np.concatenate([f.track_ids for f in items]),
                   np.concatenate([f.filled for f in items]))

    def scaled(self, factor: float) -> Faces:
        """The same faces with coordinates multiplied by ``factor`` (detection at another size)."""
        return Faces(self.boxes * factor, self.landmarks * factor, self.scores, self.track_ids, self.filled)

    def clipped(self, width: int, height: int) -> Faces:
        """Boxes clipped to the frame; faces left with no area are dropped."""
        boxes = self.boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        out = self[keep]
        out.boxes = boxes[keep]
        return out

    @property
    def sizes(self) -> np.ndarray:
        """Box side length (the larger of width and height), (N,)."""
        return np.maximum(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1])
