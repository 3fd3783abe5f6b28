"""Video out with PyAV: VFR-safe encode, colour kept, audio copied packet for packet.

Writing encodes the frames with the original timestamps and time base (variable frame rate is
kept as is) and the original colour description (primaries, transfer, matrix, range: an HDR
phone video stays HDR, a BT.709 one BT.709; pixels go back to YUV with the matrix and range they
were read with), copies every audio stream of the source packet for packet (remux, no
re-encode) or takes audio packets handed to it (`VideoWriter.write_audio`: the sound of a stream
that is not a file, such as ``veil decode``'s), drops the container's metadata (GPS, device, creation time, encoder tags) unless
asked to keep it, and writes to a temporary file beside the target that is renamed only when
complete.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from veil.errors import OutputError, WriteError
from veil.media.audio import AudioPacket, AudioParams, AudioTranscoder, add_audio_stream, packet_to_av
from veil.media.outputs import check_output, discard, publish, temporary_beside
from veil.media.read import VIDEO_SUFFIXES, Colour
from veil.media.sinks import is_live_target, open_live_output, target_name
from veil.media.sources import av_reason
from veil.media.yuv import rgb_to_yuv420

__all__ = ["EncodeOptions", "VideoWriter", "write_frames", "check_output_path"]

# The YUV matrices swscale converts with (SWS_CS_*), by AVCOL_SPC code; another matrix (or none)
# is converted with swscale's default, BT.601, and left unspecified in the output.
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_TAGGED_MATRIX = {1: 1, 4: 4, 5: 5, 6: 6, 7: 7, 9: 9, 10: 9}


@dataclass(frozen=True)
class EncodeOptions:
    """How the protected video is encoded. H.264 CRF 18 is visually lossless for most footage.

    `codec` None picks the output container's usual encoder: H.264, or VP9 in WebM (which holds
    only VP8, VP9 and AV1). `preset` is x264's speed name; VP9 reads it as libvpx's speed.
    """

    codec: str | None = None
    crf: int | None = 18
    preset: str | None = "veryfast"
    pix_fmt: str | None = None  # None: yuv420p, or yuv444p when a side is odd (4:2:0 needs even sides)
    keep_audio: bool = True
    keep_metadata: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def codec_for(self, dst: Path) -> str:
        """The encoder used for an output file named `dst`."""
        return self.codec or _CONTAINER_CODECS.get(dst.suffix.lower(), "libx264")

    def codec_options(self, codec: str) -> dict[str, str]:
        opts = dict(self.extra)
        if self.crf is not None:
            opts.setdefault("crf", str(self.crf))
        if self.preset is not None and codec in ("libx264", "libx265"):
            opts.setdefault("preset", self.preset)
        if codec in ("libvpx-vp9", "libvpx"):
            if self.crf is not None:
                opts.setdefault("b", "0")  # constant-quality mode
            if self.preset in _VPX_SPEED:
                opts.setdefault("deadline", "realtime" if _VPX_SPEED[self.preset] > 5 else "good")
                opts.setdefault("cpu-used", str(_VPX_SPEED[self.preset]))
            opts.setdefault("row-mt", "1")
        return opts


_CONTAINER_CODECS = {".webm": "libvpx-vp9"}
# x264's preset names as libvpx's speed (cpu-used; above 5 only in real-time mode). Measured on
# 640x360, 2 cores: libvpx's default 39 frames/s, speed 5 with row threads 67, speed 8 386.
_VPX_SPEED = {"ultrafast": 8, "superfast": 7, "veryfast": 5, "faster": 4, "fast": 3, "medium": 2,
              "slow": 1, "slower": 0, "veryslow": 0}


def check_output_path(src: Path, dst: Path) -> None:
    """Refuse an output that is the input itself, not a video file, or cannot be written."""
    check_output(src, dst, VIDEO_SUFFIXES, "video", ".mp4, .mov, .mkv, ...")


class VideoWriter:
    """Encodes frames to `dst` atomically, copying the audio (and optionally metadata) of `source`.

    `audio`: audio streams to create instead, whose packets are handed over with `write_audio`
    (remuxed unchanged, or re-encoded as AAC where the sink's container cannot hold them; the
    muxer interleaves them with the video). `dst` may be a live sink (`veil.media.sinks`: a stream
    URL, an HLS playlist, ``-``), written as it goes. Use as a context manager: a file appears at
    `dst` only if the block finishes without error.
    """

    def __init__(self, dst: str | os.PathLike, *, width: int, height: int, fps: Fraction,
                 time_base: Fraction | None = None, source: str | os.PathLike | None = None,
                 options: EncodeOptions = EncodeOptions(), colour: Colour = Colour(),
                 audio: Sequence[AudioParams] = ()) -> None:
        if source is not None and audio:
            raise ValueError("audio comes from the source or from write_audio, not both")
        self.live = is_live_target(dst)
        self.dst = Path(dst)  # a file's path; a live sink is named by `name`
        self.name = target_name(dst)
        self.options = options
        self.colour = colour
        self._reformatter = av.video.reformatter.VideoReformatter()
        self.fps = Fraction(fps)
        self._time_base = Fraction(time_base) if time_base else 1 / self.fps
        self.frames_written = 0
        self._last_pts: int | None = None
        self._source = av.open(str(source)) if source is not None else None
        self._tmp: Path | None = None
        try:
            if not self.live:
                self._tmp = temporary_beside(self.dst)
        except OutputError:
            if self._source is not None:
                self._source.close()
            raise
        try:
            if self.live:
                self._container = open_live_output(dst)
            else:
                self._container = av.open(str(self._tmp), "w", options={"fflags": "+bitexact"})
            self._setup_video(width, height)
            self._audio_map = self._setup_audio()
            self._given_audio = [self._given_stream(p) for p in audio] if options.keep_audio else []
            self._audio_dts: dict[int, int] = {}
            self._audio_packets = self._demux_audio()
            self._pending_audio: av.Packet | None = None
            if self._source is not None and options.keep_metadata:
                self._container.metadata.update(self._source.metadata)
        except BaseException:
            self.abort()
            raise

    def _setup_video(self, width: int, height: int) -> None:
        opts = self.options
        codec = (opts.codec or "libx264") if self.live else opts.codec_for(self.dst)
        try:
            stream = self._container.add_stream(codec, rate=self.fps, options=opts.codec_options(codec))
        except (av.FFmpegError, ValueError) as exc:
            raise OutputError(f"cannot encode with codec {codec!r}: {av_reason(exc)}") from None
        stream.width, stream.height = width, height
        odd = width % 2 or height % 2
        stream.pix_fmt = opts.pix_fmt or ("yuv444p" if odd and codec == "libx264" else "yuv420p")
        stream.codec_context.time_base = self._time_base
        stream.time_base = self._time_base
        # The frames are turned back into YUV with the matrix and range they were read with, and
        # the stream says so, along with the source's primaries and transfer (HDR stays HDR).
        colour, ctx = self.colour, stream.codec_context
        ctx.color_primaries, ctx.color_trc = colour.primaries, colour.transfer
        self._sws_matrix = None
        if stream.pix_fmt.startswith("yuv"):
            ctx.colorspace = _TAGGED_MATRIX.get(colour.matrix, 2)
            ctx.color_range = colour.range if colour.range in (1, 2) else 0
            self._sws_matrix = _SWS_MATRIX.get(colour.matrix)
        self._video = stream

    def _setup_audio(self) -> dict[int, av.stream.Stream]:
        if self._source is None or not self.options.keep_audio or not self._source.streams.audio:
            return {}
        self._check_audio_fits()
        mapping = {}
        for in_stream in self._source.streams.audio:
            out = self._container.add_stream_from_template(in_stream)
            if not self.options.keep_metadata:
                out.metadata.clear()
            mapping[in_stream.index] = out
        return mapping

    def _probe_container(self) -> av.container.OutputContainer:
        """An in-memory container of the output's kind, to try a stream in before committing to it.
        An HLS playlist is tried as its MPEG-TS segments: the HLS muxer itself writes files."""
        fmt = self._container.format.name.split(",")[0]
        return av.open(io.BytesIO(), "w", format="mpegts" if fmt == "hls" else fmt)

    def _given_stream(self, params: AudioParams) -> tuple[av.stream.Stream, AudioParams, AudioTranscoder | None]:
        """An output stream for packets of `params`: a copy where the container takes the codec,
        else a re-encoding, as Opus for WebM and Ogg, as AAC for the others (the sound is kept, not
        dropped). FLV (RTMP) is sent AAC or MP3 only: the servers and players that take RTMP do
        not read the other codecs that FFmpeg's FLV muxer writes."""
        fmt = self._container.format.name.split(",")[0]
        probe_out = self._probe_container()
        try:
            if fmt == "flv" and params.codec not in ("aac", "mp3"):
                raise ValueError("not for RTMP")
            add_audio_stream(probe_out, params)
            probe_out.start_encoding()
            fits = True
        except (av.FFmpegError, ValueError):
            fits = False
        finally:
            try:
                probe_out.close()
            except av.FFmpegError:
                pass
        if fits:
            return add_audio_stream(self._container, params), params, None
        transcoder = AudioTranscoder(self._container, params, "libopus" if fmt in ("webm", "ogg") else "aac")
        return transcoder.stream, params, transcoder

    def _check_audio_fits(self) -> None:
        """Fail before any work if the target container cannot hold the source's audio codec."""
        probe_out = self._probe_container()
        try:
            for in_stream in self._source.streams.audio:
                probe_out.add_stream_from_template(in_stream)
            probe_out.start_encoding()
        except (av.FFmpegError, ValueError) as exc:
            codecs = ", ".join(s.codec_context.name for s in self._source.streams.audio)
            raise OutputError(
                f"the audio ({codecs}) cannot be copied into a {self.dst.suffix} file ({av_reason(exc)}); "
                "write to the source's container type or pass --no-audio"
            ) from None
        finally:
            try:
                probe_out.close()
            except av.FFmpegError:
                pass

    def _demux_audio(self) -> Iterator[av.Packet]:
        if not self._audio_map:
            return iter(())
        streams = [s for s in self._source.streams.audio]
        return (p for p in self._source.demux(*streams) if p.dts is not None and p.size > 0)

    def _mux_audio_until(self, seconds: float) -> None:
        """Interleave: copy audio packets whose time is before `seconds` (keeps memory flat)."""
        while True:
            packet = self._pending_audio or next(self._audio_packets, None)
            self._pending_audio = None
            if packet is None:
                return
            if packet.dts * packet.time_base > seconds:
                self._pending_audio = packet
                return
            packet.stream = self._audio_map[packet.stream.index]
            self._mux(packet)

    def write_audio(self, packet: AudioPacket, stream: int = 0) -> None:
        """Mux one audio packet, unchanged, into the `stream`-th of the `audio` streams (dropped
        when ``keep_audio`` is off)."""
        if not self._given_audio:
            return
        out, params, transcoder = self._given_audio[stream]
        last = self._audio_dts.get(stream)
        if last is not None and packet.dts <= last:
            return  # a source that restarted its clock (a reconnected stream): the muxer needs order
        self._audio_dts[stream] = packet.dts
        if transcoder is not None:
            for av_packet in transcoder.encode(packet):
                self._mux(av_packet)
            return
        av_packet = packet_to_av(packet, params.time_base)
        av_packet.stream = out
        self._mux(av_packet)

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Encode one (H, W, 3) uint8 RGB frame; `pts` in the writer's time base (None: evenly spaced)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"frames must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if image.shape[:2] != (self._video.height, self._video.width):
            raise ValueError(f"frame size {image.shape[1]}x{image.shape[0]} differs from the video's "
                             f"{self._video.width}x{self._video.height}")
        if pts is None:
            pts = round(self.frames_written / (self.fps * self._time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # a damaged source may repeat a timestamp; keep order strictly
        self._last_pts = pts
        ctx = self._video.codec_context
        # (A SWS_CS_* code is the AVCOL_SPC code of the same matrix; none: swscale's default, BT.601.)
        planes = (rgb_to_yuv420(np.ascontiguousarray(image), self._sws_matrix or 5, ctx.color_range == 2)
                  if ctx.pix_fmt == "yuv420p" else None)
        if planes is not None:
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        else:
            rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame = self._reformatter.reformat(rgb, format=ctx.pix_fmt, dst_colorspace=self._sws_matrix,
                                               dst_color_range=ctx.color_range or None, threads=ctx.thread_count)
        frame.pts = pts
        frame.time_base = self._time_base
        self._mux_audio_until(float(pts * self._time_base))
        for packet in self._video.encode(frame):
            self._mux(packet)
        self.frames_written += 1

    def _mux(self, packet: av.Packet) -> None:
        try:
            self._container.mux(packet)
        except OSError as exc:  # a full disk, a file-size limit, an I/O error (PyAV's are OSErrors too)
            raise self._write_error(exc) from None

    def _write_error(self, exc: OSError) -> WriteError:
        if self.live and self.frames_written == 0:  # a stream sink connects when the first packet goes out
            return WriteError(f"cannot open the sink {self.name!r}: {av_reason(exc)}")
        if self.live:
            return WriteError(f"the sink {self.name!r} closed: {av_reason(exc)}")
        return WriteError(f"cannot write {str(self.dst)!r}: {av_reason(exc)}; nothing was written there")

    def close(self) -> Path:
        """Flush, copy the remaining audio, and move the file into place."""
        try:
            for packet in self._video.encode(None):
                self._mux(packet)
            self._mux_audio_until(float("inf"))
            for _, _, transcoder in self._given_audio:
                if transcoder is not None:
                    for packet in transcoder.encode(None):
                        self._mux(packet)
            try:
                self._container.close()
            except OSError as exc:  # the muxer's last buffered bytes
                raise self._write_error(exc) from None
        except BaseException:
            self.abort()
            raise
        if self._source is not None:
            self._source.close()
        if self._tmp is not None:
            publish(self._tmp, self.dst)
        return self.dst

    def abort(self) -> None:
        """Drop everything written so far; nothing appears at `dst`."""
        for c in (getattr(self, "_container", None), self._source):
            try:
                if c is not None:
                    c.close()
            except Exception:  # noqa: BLE001 - closing a broken container must not hide the cause
                pass
        if self._tmp is not None:
            discard(self._tmp)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_frames(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: Fraction | float, *,
                 audio_from: str | os.PathLike | None = None,
                 options: EncodeOptions = EncodeOptions()) -> Path:
    """Encode frames ((H, W, 3) uint8 RGB, all the same size) to a video, atomically."""
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("no frames to write")
    fps = Fraction(fps).limit_denominator(1001 * 1000)
    with VideoWriter(path, width=first.shape[1], height=first.shape[0], fps=fps,
                     source=audio_from, options=options) as writer:
        writer.write(first)
        for image in it:
            writer.write(image)
    return Path(path)
