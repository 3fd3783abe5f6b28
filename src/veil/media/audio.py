"""Compressed audio, packet by packet: what a stream's audio is (`AudioParams`), its packets
(`AudioPacket`), and an output stream that takes them unchanged (remux, no re-encoding).

The sound a protected or decoded video carries is the source's own, byte for byte; these are the
pieces that carry it through veil (``veil encode`` stores them in its stream) and back into a file.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from fractions import Fraction

import av

__all__ = ["AudioParams", "AudioPacket", "packet_to_av", "add_audio_stream", "decoder_name", "open_decoder",
           "AudioTranscoder"]


@dataclass(frozen=True)
class AudioParams:
    """What a receiver needs to decode or remux the audio packets (stored in the .veil header)."""

    codec: str
    sample_rate: int
    layout: str
    time_base: Fraction
    extradata: bytes = b""

    @classmethod
    def from_stream(cls, stream: av.audio.stream.AudioStream) -> "AudioParams":
        cc = stream.codec_context
        return cls(cc.name, int(cc.sample_rate), cc.layout.name, Fraction(stream.time_base),
                   bytes(cc.extradata or b""))

    def to_dict(self) -> dict:
        return {"codec": self.codec, "sample_rate": self.sample_rate, "layout": self.layout,
                "time_base": [self.time_base.numerator, self.time_base.denominator],
                "extradata": base64.b64encode(self.extradata).decode("ascii")}

    @classmethod
    def from_dict(cls, d: dict) -> "AudioParams":
        return cls(str(d["codec"]), int(d["sample_rate"]), str(d["layout"]), Fraction(*d["time_base"]),
                   base64.b64decode(d["extradata"]))


@dataclass(frozen=True)
class AudioPacket:
    """One compressed audio packet; times in the stream's ``time_base``."""

    pts: int
    dts: int
    duration: int
    keyframe: bool
    data: bytes

    @classmethod
    def from_av(cls, packet: av.Packet) -> "AudioPacket":
        pts = packet.pts if packet.pts is not None else (packet.dts or 0)
        dts = packet.dts if packet.dts is not None else pts
        return cls(int(pts), int(dts), int(packet.duration or 0), bool(packet.is_keyframe), bytes(packet))


def decoder_name(codec: str) -> str:
    # PyAV reports the decoder in use ("mp3float"); the codec id name opens the same decoder.
    return {"mp3float": "mp3", "aac_fixed": "aac"}.get(codec, codec)


def packet_to_av(packet: AudioPacket, time_base: Fraction) -> av.Packet:
    out = av.Packet(packet.data)
    out.pts, out.dts, out.duration = packet.pts, packet.dts, packet.duration
    out.time_base = time_base
    out.is_keyframe = packet.keyframe
    return out


def add_audio_stream(container: av.container.OutputContainer, params: AudioParams) -> av.stream.Stream:
    """An output stream that takes the stored packets unchanged (remux, no encoder)."""
    stream = container.add_stream(decoder_name(params.codec), rate=params.sample_rate)
    stream.codec_context.layout = params.layout
    if params.extradata:
        stream.codec_context.extradata = params.extradata
    stream.time_base = params.time_base
    return stream


def open_decoder(params: AudioParams) -> av.CodecContext:
    """A decoder for the packets: the one the sender used ("mp3float"), else the codec's default."""
    try:
        ctx = av.CodecContext.create(params.codec, "r")
    except (ValueError, av.error.FFmpegError):
        ctx = av.CodecContext.create(decoder_name(params.codec), "r")
    if params.extradata:
        ctx.extradata = params.extradata
    ctx.sample_rate = params.sample_rate
    ctx.layout = params.layout
    return ctx


class AudioTranscoder:
    """Re-encodes the packets of `params` as `codec` (AAC by default) into a new stream of
    `container`, for a sink whose container cannot hold the source's codec (AAC into WebM, Opus
    sent over RTMP). Opus takes 8, 12, 16, 24 or 48 kHz: other rates are resampled to 48 kHz."""

    def __init__(self, container: av.container.OutputContainer, params: AudioParams, codec: str = "aac") -> None:
        self.params = params
        self.decoder = open_decoder(params)
        rate = params.sample_rate
        if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
            rate = 48000
        self.stream = container.add_stream(codec, rate=rate)
        self.stream.layout = params.layout
        ctx = self.stream.codec_context
        self.resampler = av.AudioResampler(format=ctx.format.name, layout=params.layout, rate=rate)

    def encode(self, packet: AudioPacket | None) -> list[av.Packet]:
        """The re-encoded packets that `packet` completes (None: flush at the end)."""
        frames = self.decoder.decode(packet_to_av(packet, self.params.time_base) if packet is not None else None)
        out: list[av.Packet] = []
        for frame in frames:
            for piece in self.resampler.resample(frame):
                out += self.stream.encode(piece)
        if packet is None:
            for piece in self.resampler.resample(None):
                out += self.stream.encode(piece)
            out += self.stream.encode(None)
        return out
