"""veil: protect the people in a video.

>>> import veil
>>> veil.protect("interview.mp4", "interview_safe.mp4", method="blur")  # doctest: +SKIP
>>> veil.protect("team.jpg", "team_safe.jpg", method="mosaic")  # doctest: +SKIP
"""

__version__ = "0.1.0"

from veil.detect import Tracker, detect, get_detector  # noqa: E402
from veil.faces import Faces  # noqa: E402
from veil.media.read import probe, read_frames  # noqa: E402
from veil.media.write import write_frames  # noqa: E402
from veil.pipeline import ProtectOptions, Summary, protect, protect_photo, protect_video  # noqa: E402
from veil.pipeline.options import LiveOptions  # noqa: E402
from veil.pipeline.live import protect_live, protect_stream  # noqa: E402
from veil.protect import get_protector, protector_names  # noqa: E402

__all__ = ["Faces", "LiveOptions", "ProtectOptions", "Summary", "Tracker", "detect", "get_detector", "get_protector",
           "probe", "protect", "protect_live", "protect_photo", "protect_stream", "protect_video", "protector_names",
           "read_frames", "write_frames"]
