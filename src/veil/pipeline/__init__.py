"""The one place where I/O meets the core: decode -> detect -> track -> protect -> encode.

- `options`: `ProtectOptions` (what decides how a file is protected) and `Summary` (what happened);
- `frames`: the frame loop of one video (`protect_frames`), over any `veil.media.read.FrameSource`;
- `files`: one video or photo end to end (`protect_video`, `protect_photo`, `protect_file`) and
  `protect`, the Python API's call.

May import: the core (`veil.detect`, `veil.protect`, `veil.faces`, `veil.models`, `veil.errors`),
`veil.media`, `veil.keep` and `veil.export`. Imported by `veil.batch`, the command line and the package's API.
"""

from veil.pipeline.files import protect, protect_file, protect_photo, protect_video
from veil.pipeline.frames import FrameWriter, HeldFrame, protect_frames
from veil.pipeline.options import ProtectOptions, Summary

__all__ = ["ProtectOptions", "Summary", "FrameWriter", "HeldFrame", "protect_frames", "protect_video",
           "protect_photo", "protect_file", "protect"]
