"""Encoding a video to a .veil stream and decoding it back, chunk by chunk.

Both ends work on chunks of ``chunk_frames`` frames as they arrive, so a live input (a growing
file, a pipe) is encoded while it is recorded and a stream is decoded while it is received.

Per chunk, the sender: writes the audio packets that belong to the chunk's time span (those that
have arrived), decodes them for the log-mel features, encodes the frames to code indices
(`CodecModel.rd_codes`: codes chosen for size as well as error, reusing those of the frame
before, across chunks too), entropy-codes them with the adaptive context model (`veil.stream.entropy`),
and seals the coded bytes with the key stream drawn from those audio packets
(`veil.stream.keying`), padded to a fixed size for ``--constant-rate``. Every
``keyframe_interval`` chunks the coder and the kept codes start afresh, so a damaged or joined
stream recovers there.
The receiver meets the same audio records before each chunk, so it derives the same key stream
from the same bytes, and keeps the same coder state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from veil.device import torch_device
from veil.errors import InputError
from veil.media.audio import AudioPacket, AudioParams
from veil.media.read import Colour, Frame, VideoReader
from veil.media.write import EncodeOptions, VideoWriter, check_output_path
from veil.stream.audio import AudioDecoder, frame_features
from veil.stream.checkpoint import (
    Checkpoint,
    CheckpointError,
    default_checkpoint,
    load_checkpoint,
)
from veil.stream.entropy import ContextCoder, EntropyError
from veil.stream.format import (
    CHUNK_HEAD,
    ChunkRecord,
    CorruptStreamError,
    StreamHeader,
    StreamReader,
    StreamWriter,
    key_check,
)
from veil.stream.keying import OVERHEAD, SealError, chunk_keys, open_chunk, seal_chunk
from veil.stream.model import CodecModel, pad_to_multiple
from veil.stream.rate import fit_chunk

__all__ = ["KEYFRAME_INTERVAL", "EncodeStats", "AudioOverride", "new_coder", "frame_latents", "latent_codes",
           "decode_codes", "encode_stream", "decode_stream", "resolve_checkpoint"]

AUDIO_LAG_CHUNKS = 4  # emit a chunk anyway when the audio lags this many chunks behind the video
# Chunks from one keyframe to the next: 256 frames with the default chunking (10 s at 25 fps), as
# x264 starts a new group of pictures every 250 frames by default; a keyframe costs the first frame
# coded afresh and the coder's models learned again (bench/codec.py).
KEYFRAME_INTERVAL = 32


@dataclass
class EncodeStats:
    frames: int = 0
    chunks: int = 0
    audio_packets: int = 0
    code_bytes: int = 0  # entropy-coded indices only
    padding_bytes: int = 0  # --constant-rate: what the chunks were padded with
    reduced_chunks: int = 0  # --constant-rate: chunks sent at a lower quality to fit
    seconds: float = 0.0


@dataclass
class AudioOverride:
    """Other audio to decode with (a privacy experiment): its parameters and packets, or none."""

    params: AudioParams | None
    packets: list[AudioPacket] = field(default_factory=list)


def _to_tensor(frames: np.ndarray, feats: np.ndarray, per_step: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (n, H, W, 3) uint8 -> (n / T, T, 3, H', W') float, padded to whole clips and to the stride."""
    n = len(frames)
    extra = (-n) % per_step
    if extra:  # a short last clip repeats its last frame
        frames = np.concatenate([frames, np.repeat(frames[-1:], extra, 0)])
        feats = np.concatenate([feats, np.repeat(feats[-1:], extra, 0)])
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    x = pad_to_multiple(x, stride)
    return x.reshape(-1, per_step, *x.shape[1:]), torch.from_numpy(feats).reshape(-1, per_step, feats.shape[-1])


def new_coder(ckpt: Checkpoint) -> ContextCoder:
    """The entropy coder of a stream of ``ckpt``'s model: the sender's and the receiver's must be
    built alike (the learned prior, the first codebook's geometry), or the codes decode wrongly."""
    cfg = ckpt.model.config
    return ContextCoder(cfg.codebook_size, cfg.num_quantizers, ckpt.coder_prior, ckpt.model.first_codebook())


def frame_latents(model: CodecModel, frames: np.ndarray, feats: np.ndarray) -> torch.Tensor:
    """The encoder's latents of a run of frames (padded to whole model steps).

    Shape: frames (n, H, W, 3) uint8, feats (n, n_mels) -> (L, D, h, w), h, w = ceil(H/s), ceil(W/s)
    with s = ``model.config.stride``
    """
    x, a = _to_tensor(frames, feats, model.config.frames_per_step, model.config.stride)
    device = _device(model)
    with torch.no_grad():
        return model.encode_latent(x.to(device), a.to(device))


def latent_codes(model: CodecModel, latent: torch.Tensor, rate_weight: float,
                 reference: np.ndarray | None = None) -> np.ndarray:
    """Codes of latents by `CodecModel.rd_codes`. Shape: latent (L, D, h, w), reference (h, w, Q) -> (L, h, w, Q)."""
    ref = torch.from_numpy(reference).to(latent.device) if reference is not None else None
    return model.rd_codes(latent, rate_weight, ref).cpu().numpy()


def decode_codes(model: CodecModel, indices: np.ndarray, feats: np.ndarray, height: int, width: int) -> np.ndarray:
    """Frames back from code indices.

    Shape: indices (L, h, w, Q), feats (n, n_mels) -> (n, height, width, 3) uint8
    """
    n, per = len(feats), model.config.frames_per_step
    extra = (-n) % per
    if extra:
        feats = np.concatenate([feats, np.repeat(feats[-1:], extra, 0)])
    device = _device(model)
    a = torch.from_numpy(feats).reshape(-1, per, feats.shape[-1]).to(device)
    idx = torch.from_numpy(indices).reshape(a.shape[0], -1, *indices.shape[1:]).to(device)
    out = model.decode_codes(idx, a).flatten(0, 1)[:n, :, :height, :width]
    return (out.permute(0, 2, 3, 1) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()


def _device(model: CodecModel) -> torch.device:
    """The run's device (``--device``, `veil.device`), with the model placed there."""
    device = torch_device()
    model.to(device)
    return device


def _packet_time(p: AudioPacket, params: AudioParams) -> Fraction:
    return Fraction(p.pts) * params.time_base


def encode_stream(source: str | Path | BinaryIO, out: BinaryIO, ckpt: Checkpoint, key: bytes | None = None,
                  chunk_frames: int = 8, follow: bool = False, max_frames: int = 0,
                  progress: Callable[[EncodeStats], None] | None = None,
                  rate_weight: float | None = None, keyframe_interval: int = KEYFRAME_INTERVAL,
                  constant_rate: float | None = None,
                  on_codes: Callable[[np.ndarray], None] | None = None) -> EncodeStats:
    """Encode a video (file, growing file with ``follow``, "-" for stdin, or a file object) into ``out``.

    The video is read by `veil.media.read.VideoReader`, as ``veil protect`` reads it: upright (a
    phone video's rotation applied), with its errors (`VideoOpenError`, exit code 2).

    ``max_frames`` > 0 stops after that many frames (with the audio up to their end).
    ``rate_weight`` trades size for quality (`CodecModel.rd_codes`; None: the model's default,
    ``CodecConfig.rate_weight``); the decoder needs nothing to know of it.
    ``keyframe_interval``: chunks from one keyframe (coded afresh) to the next.
    ``constant_rate`` (bytes per second of video): every chunk is padded to the same size, so the
    stream's size over time tells nothing of the scene; a chunk that would not fit is sent with
    a lower quality (`veil.stream.rate`; counted in `EncodeStats.reduced_chunks`).
    ``on_codes`` receives each chunk's code indices as sent (L, h, w, Q), before they are coded.
    """
    if rate_weight is not None and rate_weight < 0:
        raise InputError(f"--rate-weight must be >= 0, got {rate_weight}")
    if keyframe_interval < 1:
        raise InputError(f"--keyframe-interval must be >= 1 chunk, got {keyframe_interval}")
    model, cfg = ckpt.model, ckpt.model.config
    weight = cfg.rate_weight if rate_weight is None else rate_weight
    if chunk_frames % cfg.frames_per_step:
        raise InputError(f"--chunk-frames must be a multiple of {cfg.frames_per_step} for a {cfg.kind} model")
    reader = VideoReader(source, audio=True, follow=follow)
    info = reader.info
    chunk_bytes = 0
    if constant_rate is not None:
        chunk_bytes = math.floor(constant_rate * chunk_frames / info.fps)
        least = CHUNK_HEAD + 8 * chunk_frames + OVERHEAD + 64
        if constant_rate <= 0 or chunk_bytes < least:
            reader.close()
            raise InputError(f"--constant-rate {constant_rate:g} bytes/s leaves {chunk_bytes} bytes a chunk of "
                             f"{chunk_frames} frames at {float(info.fps):g} fps; give at least "
                             f"{math.ceil(least * info.fps / chunk_frames)}")
    header = StreamHeader(ckpt.model_id, ckpt.sha256, cfg.kind, info.width, info.height, info.fps, chunk_frames,
                          cfg.codebook_size, cfg.num_quantizers, info.audio, key is not None,
                          key_check(key) if key is not None else "",
                          extra={"colour": list(astuple(info.colour))},  # the receiver tags its video alike
                          time_base=info.time_base, chunk_bytes=chunk_bytes)
    writer = StreamWriter(out, header, key)
    digest = writer.header.digest  # with the stream's own random id
    coder = new_coder(ckpt)
    null = model.null_codes().cpu().numpy()
    adec = AudioDecoder(info.audio) if info.audio else None
    stats, t0 = EncodeStats(), time.perf_counter()
    frames: list[Frame] = []
    audio: list[AudioPacket] = []
    last_pts = [-1]  # timestamps sent increase strictly, as the format requires
    latest_audio = Fraction(-1)
    reference: list[np.ndarray | None] = [None]  # the last latent frame's codes as sent

    def emit(n: int, eof: bool) -> None:
        nonlocal coder
        first = stats.frames
        end = Fraction(first + n) / info.fps
        send = audio[:] if eof else [p for p in audio if _packet_time(p, info.audio) < end]
        for p in send:
            audio.remove(p)
            writer.write_audio(p)
            adec.push(p)
        stats.audio_packets += len(send)
        pcm, rate, start = (adec.pcm, info.audio.sample_rate, adec.start or Fraction(0)) if adec else \
            (np.zeros(0, np.float32), 16000, Fraction(0))
        feats = frame_features(pcm, rate, start, info.fps, first, n, cfg.n_mels)
        keyframe = stats.chunks % keyframe_interval == 0
        latent = frame_latents(model, np.stack([f.image for f in frames[:n]]), feats)
        ref = None if keyframe else reference[0]
        pts = []
        for k, f in enumerate(frames[:n]):
            t = f.pts if f.pts is not None else round((first + k) / (info.fps * info.time_base))
            last_pts[0] = max(t, last_pts[0] + 1)
            pts.append(last_pts[0])
        sealed_room = chunk_bytes - CHUNK_HEAD - 8 * n if chunk_bytes else None
        coder, sent, coded, reduced = fit_chunk(coder, lambda w: latent_codes(model, latent, w, ref), weight, keyframe,
                                           sealed_room and sealed_room - OVERHEAD, null)
        reference[0] = sent[-1]
        if on_codes:
            on_codes(sent)
        keys = chunk_keys(digest, cfg.scramble_seed, stats.chunks, [p.data for p in send], key)
        data = seal_chunk(coded, keys, sealed_room)
        writer.write_chunk(ChunkRecord(first, n, data, tuple(pts)))
        del frames[:n]
        stats.frames, stats.chunks, stats.code_bytes = first + n, stats.chunks + 1, stats.code_bytes + len(coded)
        stats.padding_bytes += len(data) - len(coded) - OVERHEAD
        stats.reduced_chunks += reduced
        if progress:
            progress(stats)

    try:
        for item in reader.demux():
            if max_frames and stats.frames + len(frames) >= max_frames and not isinstance(item, AudioPacket):
                continue
            if isinstance(item, AudioPacket):
                if max_frames and _packet_time(item, info.audio) >= Fraction(max_frames) / info.fps:
                    continue
                audio.append(item)
                latest_audio = max(latest_audio, _packet_time(item, info.audio))
            else:
                frames.append(item)  # upright, as veil protect reads it, with its timestamp
            while len(frames) >= chunk_frames and (
                    info.audio is None or latest_audio >= Fraction(stats.frames + chunk_frames) / info.fps
                    or len(frames) >= AUDIO_LAG_CHUNKS * chunk_frames):
                emit(chunk_frames, eof=False)
    finally:
        reader.close()
    while frames:
        emit(min(chunk_frames, len(frames)), eof=len(frames) <= chunk_frames)
    for p in audio:  # audio past the last frame still travels with the stream
        writer.write_audio(p)
        stats.audio_packets += 1
    writer.close(stats.frames)
    stats.seconds = time.perf_counter() - t0
    return stats


def resolve_checkpoint(header: StreamHeader, checkpoint: str | Path | None) -> Checkpoint:
    """The checkpoint a stream was encoded with, verified by its sha256."""
    path = Path(checkpoint) if checkpoint else default_checkpoint(header.kind)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (the stream needs model {header.model_id!r}, sha256 "
                              f"{header.model_sha256[:16]}...; pass it with --checkpoint)") from exc
    if ckpt.sha256 != header.model_sha256:
        raise CorruptStreamError(f"the stream was encoded with model {header.model_id!r} (sha256 "
                                 f"{header.model_sha256[:16]}...), but {str(path)!r} has sha256 "
                                 f"{ckpt.sha256[:16]}...; pass the right one with --checkpoint")
    return ckpt


def _colour(header: StreamHeader) -> Colour:
    """The source's colour description, as the sender recorded it (unspecified in older streams)."""
    try:
        return Colour(*(int(v) for v in header.extra.get("colour", ())))
    except (TypeError, ValueError):
        raise CorruptStreamError("the stream header's colour description is not four integers") from None


def decode_stream(f: BinaryIO, out_path: str | Path | None, key: bytes | None = None,
                  checkpoint: str | Path | None = None, crf: int = 18,
                  on_frames: Callable[[np.ndarray], None] | None = None,
                  audio_override: AudioOverride | None = None,
                  progress: Callable[[int], None] | None = None,
                  on_codes: Callable[[np.ndarray], None] | None = None) -> StreamHeader:
    """Decode a stream chunk by chunk to a video file (and/or hand frames to ``on_frames``, and
    each chunk's decoded code indices to ``on_codes``).

    A damaged, truncated or tampered stream raises `StreamError`; the partial output is removed.
    """
    reader = StreamReader(f, key)
    header = reader.header
    ckpt = resolve_checkpoint(header, checkpoint)
    model, cfg = ckpt.model, ckpt.model.config
    params = audio_override.params if audio_override else header.audio
    adec = AudioDecoder(params) if params else None
    pending_override = list(audio_override.packets) if audio_override else []
    sink = None
    if out_path:
        out_path = Path(out_path)
        check_output_path(Path(str(getattr(f, "name", "<stream>"))), out_path)
        sink = VideoWriter(out_path, width=header.width, height=header.height, fps=header.fps,
                           time_base=header.timestamps_base,
                           options=EncodeOptions(codec="libx264", crf=crf, preset="veryfast"),
                           audio=[header.audio] if header.audio else (), colour=_colour(header))
    since_chunk: list[AudioPacket] = []
    ok, chunks = False, 0
    coder = new_coder(ckpt)
    strict = audio_override is None  # the privacy experiment decodes whatever other audio makes of it
    grid = (-(-header.height // cfg.stride), -(-header.width // cfg.stride))
    try:
        for rec in reader:
            if isinstance(rec, AudioPacket):
                if header.audio is None:
                    raise CorruptStreamError("an audio record in a stream whose header has no audio")
                if sink:
                    sink.write_audio(rec)
                if audio_override is None:
                    since_chunk.append(rec)
                    adec.push(rec)
            elif isinstance(rec, ChunkRecord):
                if not 0 < rec.n_frames <= header.chunk_frames:
                    raise CorruptStreamError(f"chunk {chunks} holds {rec.n_frames} frames; the header allows "
                                             f"1 to {header.chunk_frames}")
                latents = -(-rec.n_frames // cfg.frames_per_step) * cfg.latents_per_step
                if audio_override is not None and params is not None:
                    end = Fraction(rec.first_frame + rec.n_frames) / header.fps
                    since_chunk = [p for p in pending_override if _packet_time(p, params) < end]
                    pending_override = pending_override[len(since_chunk):]
                    for p in since_chunk:
                        adec.push(p)
                pcm, rate, start = (adec.pcm, params.sample_rate, adec.start or Fraction(0)) if adec else \
                    (np.zeros(0, np.float32), 16000, Fraction(0))
                feats = frame_features(pcm, rate, start, header.fps, rec.first_frame, rec.n_frames, cfg.n_mels)
                keys = chunk_keys(header.digest, cfg.scramble_seed, chunks, [p.data for p in since_chunk], key)
                try:
                    coded = open_chunk(rec.data, keys, strict)
                    codes = coder.decode(coded, (latents, *grid, cfg.num_quantizers), strict)
                except (SealError, EntropyError) as exc:
                    raise CorruptStreamError(f"chunk {chunks}: {exc}") from exc
                if on_codes:
                    on_codes(codes)
                frames = decode_codes(model, codes, feats, header.height, header.width)
                if sink:
                    for image, pts in zip(frames, rec.timestamps()):
                        sink.write(image, pts)
                if on_frames:
                    on_frames(frames)
                since_chunk, chunks = [], chunks + 1
                if progress:
                    progress(rec.first_frame + rec.n_frames)
        ok = True
    finally:
        if sink and ok:
            sink.close()
        elif sink:
            sink.abort()
    return header
