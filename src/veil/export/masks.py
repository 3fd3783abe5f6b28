"""Per-frame protection masks as PNG (``--export-masks DIR``): ``DIR/<input stem>/000000.png``, ...

One 8-bit grey PNG per frame written, named by the frame's index in the source (from 0, display
order): 255 where the protection changed or could change pixels (faces' ellipses, people's
silhouettes, plates' boxes; the whole frame when it was masked whole), 0 elsewhere. Beside them
``masks.json`` says what they belong to. The folder is built under a temporary name and moved into
place when the video is done, so a failed run leaves no half set; an earlier set of masks (a folder
with its ``masks.json``) is replaced, any other existing folder is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from veil.errors import OutputError

__all__ = ["MaskWriter", "MANIFEST"]

MANIFEST = "masks.json"


class MaskWriter:
    """Writes one video's masks into a temporary folder beside `folder`; `close` moves it into place."""

    def __init__(self, folder: str | os.PathLike, source: str) -> None:
        self.folder, self.source = Path(folder), source
        if self.folder.exists() and not (self.folder.is_dir() and (self.folder / MANIFEST).is_file()):
            if not self.folder.is_dir() or any(self.folder.iterdir()):
                raise OutputError(f"--export-masks: {str(self.folder)!r} exists and holds no earlier veil masks; "
                                  "give a new or empty folder")
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(dir=self.folder.parent, prefix=f".{self.folder.name}."))
        except OSError as exc:
            raise OutputError(f"--export-masks: cannot write in {str(self.folder.parent)!r}: {exc.strerror}") from None
        self.frames = 0
        self.shape: tuple[int, int] | None = None

    def write(self, frame: int, mask: np.ndarray) -> None:
        """The mask of frame `frame`. Shape: mask (H, W) bool."""
        self.shape = mask.shape[:2]
        path = self.tmp / f"{frame:06d}.png"
        if not cv2.imwrite(str(path), mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise OutputError(f"--export-masks: cannot write {str(path)!r} (disk full?)")
        self.frames += 1

    def close(self) -> Path:
        """Move the finished masks into place (replacing an earlier set)."""
        h, w = self.shape or (0, 0)
        (self.tmp / MANIFEST).write_text(json.dumps({"source": self.source, "frames": self.frames, "width": w,
                                                     "height": h, "format": "%06d.png"}, indent=2) + "\n")
        os.chmod(self.tmp, 0o777 & ~_umask())
        old = None
        if self.folder.exists():
            old = self.folder.with_name(f".{self.folder.name}.old-{os.getpid()}")
            os.replace(self.folder, old)
        os.replace(self.tmp, self.folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.folder

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
