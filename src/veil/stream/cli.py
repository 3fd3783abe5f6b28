"""Typer commands of the codec: ``veil encode``, ``veil decode``, ``veil train codec``.

Errors go through veil's one error boundary (`veil.console`): exit status 2 for bad input (a
damaged, truncated or tampered stream, a wrong or missing key, an unreadable video or checkpoint),
1 for other failures.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from veil.console import command, fail
from veil.device import use_device
from veil.media.outputs import check_output, discard, publish, temporary_beside
from veil.stream.checkpoint import default_checkpoint, load_checkpoint
from veil.stream.codec import KEYFRAME_INTERVAL
from veil.stream.format import read_key

__all__ = ["encode_command", "decode_command", "train_codec_command"]

DEVICE_HELP = "Where the codec's network runs: cpu, cuda[:N] (a CUDA build of torch) or auto."


def _encode(source: str, out: Path, model: str, checkpoint: Path | None, key: Path | None,
            chunk_frames: int, follow: bool, rate_weight: float | None, keyframe_interval: int,
            constant_rate: float | None) -> None:
    from veil.stream.codec import encode_stream

    # A given checkpoint carries its own kind; --model picks among the shipped ones.
    ckpt = load_checkpoint(checkpoint or default_checkpoint(model))
    secret = read_key(key) if key else None
    check_output(Path(source), out, {".veil"}, "stream", ".veil")
    tmp = temporary_beside(out)
    try:
        with open(tmp, "wb") as f:
            stats = encode_stream(source, f, ckpt, secret, chunk_frames, follow,
                                  progress=lambda s: typer.echo(f"\rencoded {s.frames} frames", nl=False, err=True),
                                  rate_weight=rate_weight, keyframe_interval=keyframe_interval,
                                  constant_rate=constant_rate)
        publish(tmp, out)
    finally:
        discard(tmp)
    typer.echo("", err=True)
    size = out.stat().st_size
    typer.echo(f"{out}: {stats.frames} frames, {stats.audio_packets} audio packets, {size} bytes "
               f"({size / max(stats.frames, 1):.0f} bytes/frame), {stats.frames / max(stats.seconds, 1e-9):.1f} frames/s"
               f"{', encrypted' if secret else ''}")
    if constant_rate is not None:
        typer.echo(f"constant rate: {stats.padding_bytes} bytes of padding; {stats.reduced_chunks} of {stats.chunks} "
                   "chunks sent at a lower quality to fit")


def _check_kind(model: str) -> None:
    if model not in ("f2f", "v2v"):
        fail(f"--model must be f2f or v2v, not {model!r}")


@command
def encode_command(
    source: Annotated[str, typer.Argument(help="input video; '-' reads a streamable container from stdin")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the .veil stream to write")],
    model: Annotated[str, typer.Option(help="shipped model: f2f (frame by frame) or v2v (clips)")] = "f2f",
    checkpoint: Annotated[Path | None, typer.Option(help="codec checkpoint (default: the shipped model)")] = None,
    key: Annotated[Path | None, typer.Option(help="32-byte key file: encrypt and authenticate (AES-GCM)")] = None,
    chunk_frames: Annotated[int, typer.Option(help="frames per chunk")] = 8,
    follow: Annotated[bool, typer.Option(help="the input is still being written: wait for it to grow")] = False,
    rate_weight: Annotated[float | None, typer.Option(
        help="size/quality: what a byte of stream is worth in squared latent error when codes are chosen; "
             "higher: smaller and coarser, 0: the nearest codes (default: the model's)", min=0.0)] = None,
    keyframe_interval: Annotated[int, typer.Option(
        help="chunks from one keyframe (coded afresh, where a damaged stream recovers) to the next")
    ] = KEYFRAME_INTERVAL,
    constant_rate: Annotated[float | None, typer.Option(
        help="bytes per second of video: pad every chunk to the same size so the stream's size says nothing "
             "of motion or scene (a chunk that would not fit is sent at a lower quality)")] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
) -> None:
    """Encode a video into a privacy-preserving .veil stream (codes + the video's own audio)."""
    use_device(device)
    _check_kind(model)
    _encode(source, output, model, checkpoint, key, chunk_frames, follow, rate_weight, keyframe_interval,
            constant_rate)


def _decode(stream: str, out: Path, checkpoint: Path | None, key: Path | None, crf: int, follow: bool) -> None:
    from veil.media.sources import GrowingFile
    from veil.stream.codec import decode_stream

    secret = read_key(key) if key else None
    if stream == "-":
        f = sys.stdin.buffer
    elif follow:
        import io

        f = io.BufferedReader(GrowingFile(stream))
    else:
        f = open(stream, "rb")  # noqa: SIM115 - closed below
    try:
        header = decode_stream(f, out, secret, checkpoint, crf,
                               progress=lambda n: typer.echo(f"\rdecoded {n} frames", nl=False, err=True))
    finally:
        if f is not sys.stdin.buffer:
            f.close()
    typer.echo("", err=True)
    typer.echo(f"{out}: {header.width}x{header.height} at {header.fps} fps, model {header.model_id}"
               f"{', with sound' if header.audio else ''}")


@command
def decode_command(
    stream: Annotated[str, typer.Argument(help=".veil stream; '-' reads stdin")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the video to write (.mp4, .mkv)")],
    key: Annotated[Path | None, typer.Option(help="key file the stream was encrypted with")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="codec checkpoint the stream was encoded with")] = None,
    crf: Annotated[int, typer.Option(help="x264 CRF of the written video")] = 18,
    follow: Annotated[bool, typer.Option(help="the stream is still arriving: decode as it grows")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
) -> None:
    """Decode a .veil stream back to a video with its sound (the receiver's side)."""
    use_device(device)
    _decode(stream, output, checkpoint, key, crf, follow)


@command
def train_codec_command(
    videos: Annotated[Path | None, typer.Option(help="Folder of training videos.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Checkpoint to write (config inside). "
                                                "With --default: the shipped model's file.")] = None,
    model: Annotated[str, typer.Option(help="f2f (frame by frame) or v2v (clips).")] = "f2f",
    default: Annotated[bool, typer.Option("--default", help="Train the shipped model of --model on the store's "
                                          "real clips (single_face.mp4 held out), with its steps and secret.")] = False,
    steps: Annotated[int | None, typer.Option(help="Total optimisation steps (default: 3000; with --default, "
                                              "the shipped model's: f2f 16000, v2v 8000).")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from --output if it exists.")] = False,
    batch_size: Annotated[int, typer.Option(help="Frames per step.")] = 16,
    crop: Annotated[int, typer.Option(help="Crop size in pixels (a multiple of 4).")] = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: torch's default).")] = 0,
) -> None:
    """Train a codec model on a folder of videos, saving a resumable checkpoint as it goes."""
    import secrets

    import torch

    from veil.models.store import fetch_many
    from veil.stream.checkpoint import save_checkpoint
    from veil.stream.model import CodecConfig
    from veil.stream.train import (
        DEFAULT_RATE_WEIGHTS,
        DEFAULT_SEEDS,
        DEFAULT_STEPS,
        DEFAULT_VIDEOS,
        TrainConfig,
        learn_coder_prior,
        load_clips,
        release,
        start_or_resume,
        train,
        video_files,
    )

    _check_kind(model)
    if default == (videos is not None):
        fail("give --videos DIR (with --output FILE), or --default")
    if videos is not None and output is None:
        fail("--videos needs --output FILE: the checkpoint to write")
    if threads:
        torch.set_num_threads(threads)
    if default:
        paths = [Path(p) for p in fetch_many(list(DEFAULT_VIDEOS)).values()]
        out = output or default_checkpoint(model)
        torch.manual_seed(0)
        config = CodecConfig(kind=model, scramble_seed=DEFAULT_SEEDS[model], rate_weight=DEFAULT_RATE_WEIGHTS[model])
        tc = TrainConfig(steps=steps or DEFAULT_STEPS[model], batch=batch_size, crop=crop, lr=lr)
    else:
        paths, out = video_files(videos), output
        config = CodecConfig(kind=model, scramble_seed=secrets.randbits(63))
        tc = TrainConfig(steps=steps or TrainConfig.steps, batch=batch_size, crop=crop, lr=lr)
    ckpt = start_or_resume(out, config, resume)
    clips = load_clips(paths, ckpt.model.config.n_mels, tc.max_frames, log=typer.echo)
    train(ckpt, clips, tc, out, log=typer.echo)
    typer.echo("learning the entropy coder's prior from the training videos' codes")
    ckpt.coder_prior = learn_coder_prior(ckpt.model, clips)
    save_checkpoint(ckpt, out)
    if default:
        ckpt = release(out)
    typer.echo(f"saved {out} (step {ckpt.step}, sha256 {ckpt.sha256[:16]}...)")
