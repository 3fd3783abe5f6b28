"""What a run exports beside the protected video: its tracks (`veil.export.tracks`) and its
per-frame masks (`veil.export.masks`), both written only when the whole file succeeded; and the
decisions of a review (`veil.export.review`), which ``veil protect --review`` applies.

May import: `veil.errors`, `veil.faces`, `veil.protect` (the protection's own masks) and
`veil.media` (atomic outputs). Imported by `veil.pipeline` and the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from veil.export.masks import MaskWriter
from veil.export.tracks import TrackLog, Tracks, read_tracks, write_tracks
from veil.faces import Faces
from veil.protect.base import protection_mask

__all__ = ["Exports", "TrackLog", "Tracks", "read_tracks", "write_tracks", "MaskWriter"]


class Exports:
    """One file's exports while it is protected: `frame` from the frame loop (in frame order, the
    boxes the protection gets, kept ones included), `mask` from the encoder's thread (the faces the
    protection really gets, after `--keep-face`); `finish` writes them, `abort` leaves nothing."""

    def __init__(self, tracks: Path | None, masks: Path | None, source: str, protector: Any) -> None:
        self.tracks_path, self.protector = tracks, protector
        self.log = TrackLog() if tracks is not None else None
        self.masks = MaskWriter(masks, source) if masks is not None else None

    def frame(self, index: int, time_s: float, faces: Faces, kept: np.ndarray | None, whole: str | None) -> None:
        """Frame `index`'s final boxes; `whole`: why it is masked whole (None: it is not)."""
        if self.log is None:
            return
        self.log.add(index, time_s, faces, kept)
        if whole is not None:
            self.log.mask_whole(index, whole)

    def protection_failed(self, index: int) -> None:
        if self.log is not None:
            self.log.mask_whole(index, "protection failed")

    def mask(self, index: int, shape: tuple[int, ...], faces: Faces, whole: bool) -> None:
        if self.masks is not None:
            self.masks.write(index, np.ones(shape[:2], bool) if whole else protection_mask(shape, faces,
                                                                                             self.protector))

    def finish(self, *, video: dict[str, Any], detector: str, targets: list[str]) -> None:
        if self.log is not None:
            write_tracks(self.tracks_path, self.log, video=video, detector=detector, targets=targets)
        if self.masks is not None:
            self.masks.close()

    def abort(self) -> None:
        if self.masks is not None:
            self.masks.abort()
