"""People: found by Human's CenterNet, outlined by its selfie segmentation (`veil.models.people`).

`PeopleDetector.detect` gives each person a box (kind `PERSON`, five stand-in landmarks at its
centre) that goes through the same tracker, look-ahead and fail-closed rules as faces.
`PeopleDetector.outline` then gives each person box of a frame its silhouette, from that frame's
own pixels, so the mask follows the person (not the box) on the frames the tracker filled in too.
A silhouette is only ever a narrowing of a box that is masked anyway; where it is missing or
the segmentation finds no person in the box, the whole box is masked.
"""

from __future__ import annotations

import numpy as np

from veil.detect.base import nms
from veil.faces import PERSON, Faces, centre_points, silhouette_frame

__all__ = ["PeopleDetector", "PEOPLE_THRESHOLD"]

# Human's own default (config.ts: object.minConfidence). On vtest.avi it keeps 106 of the 109
# people OpenCV's HOG detector finds, and some rocks and cones (up to 0.38); 0.4 keeps 102: a
# false box only blurs a little background, a missed person is shown.
PEOPLE_THRESHOLD = 0.2
_NMS_IOU = 0.4  # Human's object.iouThreshold
_SILHOUETTE = 0.5  # probability above which a pixel is the person's
_LEAST_PERSON = 0.05  # a segmentation that finds less of the box than this missed the person


class PeopleDetector:
    """Finds and outlines people. ``detect(rgb) -> Faces`` (kind PERSON); ``outline(rgb, faces)``."""

    name = "centernet"

    def __init__(self, threshold: float = PEOPLE_THRESHOLD, detector=None, segmenter=None) -> None:
        from veil.models.people import CenterNet, Selfie

        self.threshold = threshold
        self.net = detector or CenterNet.pretrained()
        self.segmenter = segmenter or Selfie.pretrained()

    def detect(self, image: np.ndarray) -> Faces:
        boxes, scores = self.net.people(image, self.threshold)
        keep = nms(boxes, scores, _NMS_IOU)
        boxes, scores = boxes[keep], scores[keep]
        return Faces(boxes, centre_points(boxes), scores, kinds=np.full(len(keep), PERSON, np.int8))

    def detect_batch(self, images) -> list[Faces]:
        return [self.detect(image) for image in images]

    def outline(self, image: np.ndarray, faces: Faces) -> Faces:
        """`faces` with a silhouette on each person (over its box, True where the person is)."""
        people = np.flatnonzero(faces.kinds == PERSON)
        if len(people) == 0:
            return faces
        h, w = image.shape[:2]
        crops, frames = [], []
        for i in people:
            frame = silhouette_frame(faces.boxes[i])
            frames.append(frame)
            crops.append(image[max(0, frame[1]):min(h, frame[3]), max(0, frame[0]):min(w, frame[2])])
        silhouettes = list(faces.silhouettes)
        for i, frame, prob in zip(people, frames, self.segmenter.batch(crops)):
            silhouettes[i] = _over_frame(prob > _SILHOUETTE, frame, w, h)
        return Faces(faces.boxes, faces.landmarks, faces.scores, faces.track_ids, faces.filled, faces.kinds,
                     tuple(silhouettes))


def _over_frame(person: np.ndarray, frame: tuple[int, int, int, int], width: int, height: int) -> np.ndarray | None:
    """A segmented crop (the silhouette frame clipped to the picture) as a mask over the whole
    silhouette frame; None where the segmentation missed the person (the whole box stays masked)."""
    x1, y1, x2, y2 = frame
    out = np.zeros((y2 - y1, x2 - x1), bool)
    ox, oy = max(0, x1) - x1, max(0, y1) - y1
    out[oy:oy + person.shape[0], ox:ox + person.shape[1]] = person
    return out if person.size and person.mean() >= _LEAST_PERSON else None
