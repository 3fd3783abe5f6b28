"""Streaming: memory stays flat while a long HD video is protected (nothing accumulates per frame)."""

import resource

import av
import numpy as np

import veil
from veil.pipeline import ProtectOptions, protect_video


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _hd_clip(path, frames: int = 240):
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "crf": "28"})
        s.width, s.height, s.pix_fmt = 1280, 720, "yuv420p"
        y, x = np.mgrid[0:720, 0:1280]
        for i in range(frames):
            image = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, (x + y) // 8 % 256], axis=2).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    return path


def test_memory_is_flat_on_a_long_hd_video(tmp_path):
    src = _hd_clip(tmp_path / "hd.mp4")
    samples: dict[int, float] = {}

    def progress(done: int, total: int) -> None:
        samples[done] = _rss_mb()

    summary = protect_video(src, tmp_path / "out.mp4", ProtectOptions(detect_size=320), progress=progress)
    assert summary.frames == 240
    # Up to ~60 frames are in flight (decoded ahead, held by the tracker, queued to be protected and
    # encoded): memory rises until they are, then must stay flat.
    early = np.median([v for k, v in samples.items() if 90 <= k <= 110])
    late = np.median([v for k, v in samples.items() if k >= 220])
    # 240 decoded 720p RGB frames would be 660 MB; growth must stay far below even a tenth of that.
    assert late - early < 40, f"memory grew from {early:.0f} MB to {late:.0f} MB"
    assert veil.probe(tmp_path / "out.mp4").frame_count == 240
