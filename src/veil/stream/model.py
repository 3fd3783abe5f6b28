"""The cycle-VQ-VAE of the streaming codec: F2F (frame by frame) and V2V (short clips).

Paper: Xu et al., "Audio-Visual Autoencoding for Privacy-Preserving Video Streaming" (IoTJ 2021).
The abstract fixes the ideas (a VQ-VAE; the video's own audio fused in as non-patterned noise;
F2F and V2V; a cycle); it gives no layer sizes. The choices made here, and why:

* **Downsampling /8 with a residual quantiser.** One code cell per 8x8 pixels (a quarter of the
  cells of a /4 grid, which format 4 streams used) with `ResidualVQ` (``num_quantizers`` stages of
  ``codebook_size`` codes, from vector-quantize-pytorch) for the capacity a single codebook lacks;
  the rate is chosen per cell by `CodecModel.rd_codes`, and `veil.stream.rate` drops the last
  stages where ``--constant-rate`` leaves no room for them. The convolutions are narrow at the large scales (``widths``: 16 channels
  at /2, 32 at /4, 64 at /8), where a CPU spends its time: about 0.6 GMAC a 640x360 frame each way.
* **Audio fusion by FiLM.** Each frame's log-mel segment (see `veil.stream.audio`) goes through a
  small MLP to an embedding that scales and shifts the feature maps of both the encoder and the
  decoder (FiLM, initialised to the identity). A learned fusion alone cannot *guarantee* that the
  codes fail to decode without the audio (a decoder may learn to ignore a silent track, and the
  real test clips are silent), so the codec also keys permutations of the code alphabet and of
  the cells of the code grid on the audio bytes (`veil.stream.keying`); the measured wrong-audio
  PSNR is in bench/results/codec.md.
* **V2V** runs the same 2D stem on each frame of a clip of ``clip_frames`` frames, relates the
  frames with a 3D-convolution residual block, and halves time with a (2, 1, 1) stride, so it
  sends half as many codes per frame as F2F; the decoder mirrors it.
* **Cycle loss**: the decoded video is re-encoded and pulled toward the quantised codes it came
  from (``cycle_loss``), the consistency that gives the cycle-VQ-VAE its name.

Tensors are float in [0, 1] on the outside; the networks see ``x - 0.5``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from vector_quantize_pytorch import ResidualVQ

from veil.stream.entropy import NEIGHBOURS

__all__ = ["CodecConfig", "CodecModel", "Coded", "pad_to_multiple"]

ModelKind = Literal["f2f", "v2v"]
TIME_STRIDE = 2  # V2V only


@dataclass(frozen=True)
class CodecConfig:
    """Everything needed to rebuild a codec model; stored inside each checkpoint."""

    kind: ModelKind = "f2f"
    widths: tuple[int, ...] = (16, 32, 64)  # channels after each stride-2 convolution
    code_dim: int = 32
    codebook_size: int = 256
    num_quantizers: int = 6
    n_mels: int = 32
    audio_dim: int = 32
    clip_frames: int = 4  # V2V: frames per clip (a multiple of TIME_STRIDE)
    scramble_seed: int = 0  # secret of this model, mixed into the audio-keyed key stream
    rate_weight: float = 0.006  # default of `CodecModel.rd_codes` (``veil encode --rate-weight``)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not self.widths:
            raise ValueError("a codec model needs at least one stride-2 layer")
        if self.kind not in ("f2f", "v2v"):
            raise ValueError(f"model kind must be 'f2f' or 'v2v', not {self.kind!r}")
        if self.kind == "v2v" and self.clip_frames % TIME_STRIDE:
            raise ValueError(f"clip_frames must be a multiple of {TIME_STRIDE}, got {self.clip_frames}")

    @property
    def stride(self) -> int:
        """Pixels per code cell along each side (frames are padded to a multiple of it)."""
        return 2 ** len(self.widths)

    @property
    def channels(self) -> int:
        return self.widths[-1]

    @property
    def frames_per_step(self) -> int:
        """Frames the model consumes at once: 1 for F2F, ``clip_frames`` for V2V."""
        return 1 if self.kind == "f2f" else self.clip_frames

    @property
    def latents_per_step(self) -> int:
        return 1 if self.kind == "f2f" else self.clip_frames // TIME_STRIDE

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Coded:
    """Output of `CodecModel.forward`: reconstruction, code indices and the losses."""

    recon: torch.Tensor  # like the input
    indices: torch.Tensor  # (B, L, h, w, Q) int64
    quantized: torch.Tensor  # (B*L, D, h, w)
    latent: torch.Tensor  # (B*L, D, h, w), before quantisation
    commit_loss: torch.Tensor


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the last two axes up to a multiple of ``multiple``.

    Shape:
        x: (..., H, W) -> (..., ceil(H / m) * m, ceil(W / m) * m)
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    return F.pad(flat, (0, pw, 0, ph), mode="replicate").reshape(*lead, x.shape[-3], h + ph, w + pw)


NEIGHBOUR_COST = 0.3  # `CodecModel.rd_codes`: a neighbour's code costs this share of a new one
# `rd_codes`' look-back: the cell itself, then its eight neighbours (the entropy coder's candidates)
_LOOK = ((0, 0), *NEIGHBOURS)


def _shift(a: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[y, x] = a[y + dy, x + dx]``, the edge repeated outside. Shape: (h, w) -> (h, w)."""
    h, w = a.shape
    rows = torch.arange(h, device=a.device).add(dy).clamp(0, h - 1)
    cols = torch.arange(w, device=a.device).add(dx).clamp(0, w - 1)
    return a[rows][:, cols]


class ResBlock(nn.Module):
    def __init__(self, channels: int, conv: type[nn.Module] = nn.Conv2d) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), conv(channels, channels, 3, padding=1), nn.ReLU(),
                                  conv(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FiLM(nn.Module):
    """Audio-conditioned scale and shift of a feature map, the identity at initialisation."""

    def __init__(self, audio_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(audio_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Shape: x (N, C, h, w), audio (N, A) -> (N, C, h, w)."""
        scale, shift = rearrange(self.proj(audio), "n (two c) -> two n c 1 1", two=2)
        return x * (1 + scale) + shift


class CodecModel(nn.Module):
    """Audio-conditioned VQ-VAE over frames (F2F) or clips (V2V)."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.audio_net = nn.Sequential(nn.Linear(c.n_mels, 64), nn.ReLU(), nn.Linear(64, c.audio_dim))
        down: list[nn.Module] = []
        for cin, cout in zip((3, *c.widths), c.widths):
            down += [nn.Conv2d(cin, cout, 4, 2, 1), nn.ReLU()]
        self.enc_stem = nn.Sequential(*down[:-1], ResBlock(c.channels))
        self.enc_film = FiLM(c.audio_dim, c.channels)
        self.enc_head = nn.Sequential(ResBlock(c.channels), nn.ReLU(), nn.Conv2d(c.channels, c.code_dim, 1))
        self.dec_in = nn.Conv2d(c.code_dim, c.channels, 1)
        self.dec_film = FiLM(c.audio_dim, c.channels)
        up: list[nn.Module] = []
        for cin, cout in zip(reversed(c.widths), (*reversed(c.widths[:-1]), 3)):
            up += [nn.ReLU(), nn.ConvTranspose2d(cin, cout, 4, 2, 1)]
        self.dec_body = nn.Sequential(ResBlock(c.channels), ResBlock(c.channels), *up)
        if c.kind == "v2v":
            # Relations between frames: a 3D residual block, then time halved (and restored).
            self.enc_time = nn.Sequential(ResBlock(c.channels, nn.Conv3d),
                                          nn.Conv3d(c.channels, c.channels, (TIME_STRIDE, 1, 1), (TIME_STRIDE, 1, 1)))
            self.dec_time = nn.Sequential(
                nn.ConvTranspose3d(c.channels, c.channels, (TIME_STRIDE, 1, 1), (TIME_STRIDE, 1, 1)),
                ResBlock(c.channels, nn.Conv3d))
        self.quantizer = ResidualVQ(dim=c.code_dim, num_quantizers=c.num_quantizers,
                                    codebook_size=c.codebook_size, kmeans_init=True, kmeans_iters=10,
                                    decay=0.9, threshold_ema_dead_code=2, commitment_weight=0.25)

    # -- encoder / decoder on latents ------------------------------------------------------------
    def encode_latent(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Frames to continuous latents.

        Shape:
            frames: (B, T, 3, H, W) float in [0, 1], H and W multiples of ``config.stride``,
                T == 1 for F2F, ``clip_frames`` for V2V
            audio: (B, T, n_mels) log-mel features of each frame
            return: (B * L, D, H/s, W/s) with s = ``config.stride``, L = ``latents_per_step``
        """
        b, t = frames.shape[:2]
        a = self.audio_net(rearrange(audio, "b t m -> (b t) m"))
        h = self.enc_film(self.enc_stem(rearrange(frames, "b t c y x -> (b t) c y x") - 0.5), a)
        if self.config.kind == "v2v":
            h = rearrange(h, "(b t) c y x -> b c t y x", b=b)
            h = rearrange(self.enc_time(h), "b c l y x -> (b l) c y x")
        return self.enc_head(h)

    def decode_latent(self, quantized: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Quantised latents back to frames.

        Shape:
            quantized: (B * L, D, h, w); audio: (B, T, n_mels) -> (B, T, 3, s*h, s*w) float (unclamped)
        """
        b, t = audio.shape[:2]
        h = self.dec_in(quantized)
        if self.config.kind == "v2v":
            h = rearrange(h, "(b l) c y x -> b c l y x", b=b)
            h = rearrange(self.dec_time(h), "b c t y x -> (b t) c y x")
        a = self.audio_net(rearrange(audio, "b t m -> (b t) m"))
        out = self.dec_body(self.dec_film(h, a)) + 0.5
        return rearrange(out, "(b t) c y x -> b t c y x", b=b)

    # -- quantiser ---------------------------------------------------------------------------------
    def quantize(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shape: latent (N, D, h, w) -> quantized (N, D, h, w), indices (N, h, w, Q), commit loss ()."""
        n, _, h, w = latent.shape
        q, idx, loss = self.quantizer(rearrange(latent, "n d y x -> n (y x) d"))
        q = rearrange(q, "n (y x) d -> n d y x", y=h)
        return q, rearrange(idx, "n (y x) q -> n y x q", y=h), loss.sum()

    @torch.no_grad()
    def nearest_codes(self, latent: torch.Tensor) -> torch.Tensor:
        """Residual nearest-neighbour search as one matmul per stage (inference only).

        Same result as the quantiser's own forward pass in eval mode, several times faster on a CPU
        for whole frames. Shape: latent (N, D, h, w) -> indices (N, h, w, Q) int64
        """
        n, _, h, w = latent.shape
        residual = rearrange(latent, "n d y x -> (n y x) d").clone()
        out = []
        for codebook in self.quantizer.codebooks:  # (K, D) per stage
            dist = (codebook * codebook).sum(1)[None] - 2 * residual @ codebook.T
            idx = dist.argmin(1)
            residual -= codebook[idx]
            out.append(idx)
        return rearrange(torch.stack(out, -1), "(n y x) q -> n y x q", n=n, y=h)

    def codes_to_quantized(self, indices: torch.Tensor) -> torch.Tensor:
        """Shape: indices (N, h, w, Q) int -> (N, D, h, w) float."""
        n, h, w, _ = indices.shape
        q = self.quantizer.get_output_from_indices(rearrange(indices, "n y x q -> n (y x) q"))
        return rearrange(q, "n (y x) d -> n d y x", y=h)

    # -- whole passes ------------------------------------------------------------------------------
    def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> Coded:
        """Shape: frames (B, T, 3, H, W) in [0, 1]; audio (B, T, n_mels)."""
        latent = self.encode_latent(frames, audio)
        quantized, idx, commit = self.quantize(latent)
        recon = self.decode_latent(quantized, audio)
        b = frames.shape[0]
        return Coded(recon, rearrange(idx, "(b l) y x q -> b l y x q", b=b), quantized, latent, commit)

    def cycle_loss(self, coded: Coded, audio: torch.Tensor) -> torch.Tensor:
        """The cycle: re-encode the decoded video and compare with the codes it was decoded from."""
        again = self.encode_latent(coded.recon.clamp(0, 1), audio)
        return F.mse_loss(again, coded.quantized.detach())

    @torch.no_grad()
    def rd_codes(self, latent: torch.Tensor, rate_weight: float, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Codes chosen for rate as well as distortion: what the entropy coder sends cheaply wins ties.

        The residual search of `nearest_codes`, frame by frame, where at each stage a cell takes
        the cheapest of: its nearest code, at the cost of its squared error plus ``rate_weight``
        (a new index costs the coder about a byte); the code it had in the previous latent frame,
        at its error alone; or a code one of its eight neighbours had in the previous latent frame,
        at its error plus ``NEIGHBOUR_COST`` times ``rate_weight`` (what `veil.stream.entropy`
        codes as a candidate costs a few bits). A cell whose codes all repeat the previous frame's
        costs the coder one flag, so still parts of the picture cost next to nothing, and moving
        parts reuse what is around them. ``rate_weight`` 0 is `nearest_codes`. The first latent
        frame looks back at ``reference`` (the codes of the latent frame before it, as sent);
        without one (a keyframe) it looks at its neighbours' nearest codes instead, which the
        coder's later passes see as candidates too.

        Shape: latent (N, D, h, w), reference (h, w, Q) -> (N, h, w, Q) int64, N latent frames in
        time order
        """
        if rate_weight < 0:
            raise ValueError(f"the rate weight must be >= 0, got {rate_weight}")
        if not rate_weight:
            return self.nearest_codes(latent)
        n, _, h, w = latent.shape
        books = list(self.quantizer.codebooks)
        norms = [(cb * cb).sum(1) for cb in books]
        prev, out = reference, []
        for t in range(n):
            residual = rearrange(latent[t], "d y x -> (y x) d").clone()
            chosen = []
            for q, cb in enumerate(books):
                dist = norms[q][None] - 2 * residual @ cb.T + (residual * residual).sum(1, keepdim=True)
                choice = dist.argmin(1)
                cost = dist.gather(1, choice[:, None])[:, 0] + rate_weight
                # look back at the previous frame's codes; in a first frame, at the neighbours' nearest
                source, look = (prev[..., q], _LOOK) if prev is not None else (choice.reshape(h, w), _LOOK[1:])
                for dy, dx in look:
                    extra = 0.0 if (dy, dx) == (0, 0) else NEIGHBOUR_COST
                    cand = _shift(source, dy, dx).reshape(-1)
                    c = dist.gather(1, cand[:, None])[:, 0] + extra * rate_weight
                    better = c < cost
                    cost, choice = torch.where(better, c, cost), torch.where(better, cand, choice)
                residual -= cb[choice]
                chosen.append(choice)
            prev = rearrange(torch.stack(chosen, -1), "(y x) q -> y x q", y=h)
            out.append(prev)
        return torch.stack(out)

    @torch.no_grad()
    def first_codebook(self) -> np.ndarray:
        """The first stage's codes, for the entropy coder's model of how codes move. Shape: (K, D) float32."""
        return self.quantizer.codebooks[0].detach().cpu().float().numpy()

    @torch.no_grad()
    def null_codes(self) -> torch.Tensor:
        """Each stage's code nearest the zero vector: sent in place of a stage to drop it. Shape: (Q,)."""
        return torch.stack([(cb * cb).sum(1).argmin() for cb in self.quantizer.codebooks])

    @torch.no_grad()
    def encode_codes(self, frames: torch.Tensor, audio: torch.Tensor, rate_weight: float = 0.0,
                     reference: torch.Tensor | None = None) -> torch.Tensor:
        """Frames to code indices, by `rd_codes` over the whole run (from ``reference``, the codes
        of the latent frame before the run, when given; ``rate_weight`` 0: the nearest codes).

        Shape: frames (B, T, 3, H, W), audio (B, T, n_mels) -> (B, L, h, w, Q) int64
        """
        idx = self.rd_codes(self.encode_latent(frames, audio), rate_weight, reference)
        return rearrange(idx, "(b l) y x q -> b l y x q", b=frames.shape[0])

    @torch.no_grad()
    def decode_codes(self, indices: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Shape: indices (B, L, h, w, Q), audio (B, T, n_mels) -> (B, T, 3, s*h, s*w) in [0, 1]."""
        q = self.codes_to_quantized(rearrange(indices, "b l y x q -> (b l) y x q"))
        return self.decode_latent(q, audio).clamp(0, 1)
