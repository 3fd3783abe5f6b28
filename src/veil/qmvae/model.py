"""QM-VAE: a VQ-VAE that fuses de-identified versions of a face into one face that keeps a service.

The input is the aligned face crop de-identified k ways (blindfold, mosaic, Laplace noise, cartoon
by default; 3, 4 or 5 inputs as in the paper's Figure 12), stacked on channels. The original face
is never an input: it is only the reconstruction target of the loss. Encoder -> vector quantiser
(``vector_quantize_pytorch.VectorQuantize``, Eq. 5-6) -> decoder -> face crop.

Loss (Eq. 7)::

    alpha * L_service + (1 - alpha) * MSE(x, x_hat) + |sg[z_e] - e|^2 + beta * |z_e - sg[e]|^2

The paper's L_service (Eq. 8) is 0/1 (expressions equal or not) and has no gradient; training
uses a differentiable surrogate, the KL divergence between a service's outputs on the original
and on the generated face (:func:`service_divergence`); the 0/1 rate is reported alongside.

A *service* is any callable ``faces -> logits`` on QM-VAE crops, ``(B, 3, S, S)`` RGB in 0..1.
:class:`ExpressionService` wraps veil's expression classifier; an age or gender model plugs in
the same way (resample the crop to the model's input, return its logits).

Usage::

    >>> model = QMVAE(QMVAEConfig())
    >>> x = torch.rand(2, model.config.in_channels, 64, 64)
    >>> out = model(x)
    >>> tuple(out.faces.shape), tuple(out.indices.shape)
    ((2, 3, 64, 64), (2, 8, 8))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import VectorQuantize

from veil.align import EXPRESSION_CROP, CropSpec

__all__ = ["DEIDENTIFICATIONS", "QMVAEConfig", "QMVAE", "QMVAEOutput", "QMVAELoss", "Service",
           "ExpressionService", "composite", "qmvae_loss", "service_divergence", "service_loss_rate", "crop_to_spec",
           "search_codes"]

DEIDENTIFICATIONS = ("blindfold", "mosaic", "noise", "cartoon", "blur")
"""De-identifications QM-VAE can take as inputs (the paper's four, plus blur as a fifth)."""

Service = Callable[[torch.Tensor], torch.Tensor]
"""faces (B, 3, S, S) RGB 0..1 in the QM-VAE crop -> logits (B, C)."""


@dataclass
class QMVAEConfig:
    """The model's shape. ``inputs`` order is the channel order of the stacked input."""

    inputs: tuple[str, ...] = ("blindfold", "mosaic", "noise", "cartoon")
    size: int = 64
    padding: float = 0.35
    hidden: tuple[int, ...] = (32, 64, 128)
    codebook_size: int = 32
    codebook_dim: int = 32

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)
        self.hidden = tuple(int(h) for h in self.hidden)
        unknown = [name for name in self.inputs if name not in DEIDENTIFICATIONS]
        if unknown or not self.inputs:
            raise ValueError(f"inputs must be some of {', '.join(DEIDENTIFICATIONS)}; got {list(self.inputs)}")
        if self.size % (2 ** len(self.hidden)):
            raise ValueError(f"size {self.size} must be divisible by 2**{len(self.hidden)} (one halving per hidden layer)")
        if self.codebook_size < 2 or self.codebook_dim < 1:
            raise ValueError(f"codebook_size >= 2 and codebook_dim >= 1 needed, got {self.codebook_size}, {self.codebook_dim}")

    @property
    def in_channels(self) -> int:
        return 3 * len(self.inputs)

    @property
    def latent_size(self) -> int:
        return self.size // 2 ** len(self.hidden)

    @property
    def crop(self) -> CropSpec:
        return CropSpec(self.size, self.padding)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _encoder(cfg: QMVAEConfig) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, cfg.hidden[0], 3, padding=1)]
    chans = (cfg.hidden[0], *cfg.hidden)
    for c_in, c_out in zip(chans[:-1], chans[1:]):
        layers += [nn.ReLU(), nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)]
    layers += [_Residual(cfg.hidden[-1]), nn.ReLU(), nn.Conv2d(cfg.hidden[-1], cfg.codebook_dim, 1)]
    return nn.Sequential(*layers)


def _decoder(cfg: QMVAEConfig) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cfg.codebook_dim, cfg.hidden[-1], 3, padding=1), _Residual(cfg.hidden[-1])]
    chans = (*reversed(cfg.hidden), cfg.hidden[0])
    for c_in, c_out in zip(chans[:-1], chans[1:]):
        layers += [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
    layers += [nn.ReLU(), nn.Conv2d(cfg.hidden[0], 3, 3, padding=1), nn.Sigmoid()]
    return nn.Sequential(*layers)


class QMVAEOutput(NamedTuple):
    faces: torch.Tensor       # (B, 3, S, S) in 0..1
    indices: torch.Tensor     # (B, s, s) codebook indices
    codebook: torch.Tensor    # scalar |sg[z_e] - e|^2
    commitment: torch.Tensor  # scalar |z_e - sg[e]|^2


class QMVAE(nn.Module):
    """The QM-VAE generator.

    Shape:
        forward(x): (B, 3k, S, S) de-identified crops in 0..1, k = len(config.inputs)
            -> QMVAEOutput(faces (B, 3, S, S), indices (B, S/2^L, S/2^L), codebook (), commitment ())
        encode(x): -> (B, D, s, s) latent z_e;  quantize(z): -> (z_q, indices)
        decode(indices): (B, s, s) -> (B, 3, S, S)
    """

    def __init__(self, config: QMVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = _encoder(config)
        # The codebook is learnt by the codebook term of Eq. 7 (no EMA); commitment is computed below.
        # k-means initialisation from the first batch and re-seeding codes used by < 2 vectors keep
        # the codebook from collapsing onto a few codes on small data sets.
        self.vq = VectorQuantize(dim=config.codebook_dim, codebook_size=config.codebook_size,
                                 accept_image_fmap=True, learnable_codebook=True, ema_update=False,
                                 commitment_weight=0.0, kmeans_init=True, threshold_ema_dead_code=2)
        self.decoder = _decoder(config)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected (B, {self.config.in_channels}, {self.config.size}, {self.config.size}) "
                             f"for inputs {list(self.config.inputs)}, got {tuple(x.shape)}")
        return self.encoder(x)

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 5-6: nearest codebook vector per position, straight-through gradient to z_e."""
        z_q, indices, _ = self.vq(z_e)
        return z_q, indices

    def codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook vectors at the indices. Shape: (B, s, s) -> (B, D, s, s)."""
        return self.vq.get_output_from_indices(indices)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.codes(indices))

    def forward(self, x: torch.Tensor) -> QMVAEOutput:
        z_e = self.encode(x)
        z_q, indices = self.quantize(z_e)
        e = self.codes(indices)
        codebook = F.mse_loss(e, z_e.detach())     # Eq. 7, third term: moves the codebook
        commitment = F.mse_loss(z_e, e.detach())  # Eq. 7, fourth term: holds the encoder
        return QMVAEOutput(self.decoder(z_q), indices, codebook, commitment)


def crop_to_spec(faces: torch.Tensor, source: CropSpec, target: CropSpec) -> torch.Tensor:
    """Resample aligned crops of one spec into another (both centred on the same mean face).

    Differentiable; regions outside the source are zero.

    Shape:
        faces: (B, C, source.size, source.size) -> (B, C, target.size, target.size)
    """
    # Crop pixel u maps to face coordinate (u / size) * (1 + 2p) - p: same centre, scale ratio.
    scale = (1 + 2 * target.padding) / (1 + 2 * source.padding)
    theta = torch.tensor([[scale, 0.0, 0.0], [0.0, scale, 0.0]], dtype=faces.dtype, device=faces.device)
    grid = F.affine_grid(theta.expand(len(faces), 2, 3), [len(faces), faces.shape[1], target.size, target.size],
                         align_corners=False)
    return F.grid_sample(faces, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass
class ExpressionService:
    """Facial expression as QM-VAE's service: face-api's 7-class classifier on the crop.

    Shape:
        __call__(faces): (B, 3, S, S) RGB 0..1 in ``crop`` -> (B, 7) logits
    """

    crop: CropSpec
    net: nn.Module = field(default=None, repr=False)  # type: ignore[assignment]
    own_crop: CropSpec = EXPRESSION_CROP
    """The classifier's own crop: :meth:`on_own_crop` takes faces aligned this way."""

    def __post_init__(self) -> None:
        if self.net is None:
            from veil.models.expression import ExpressionNet

            self.net = ExpressionNet.pretrained()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def __call__(self, faces: torch.Tensor) -> torch.Tensor:
        return self.net.logits(crop_to_spec(faces, self.crop, self.own_crop) * 255.0)

    def on_own_crop(self, faces: torch.Tensor) -> torch.Tensor:
        """Logits of faces cut from the frame in :attr:`own_crop` (what an evaluation measures).

        Shape:
            faces: (B, 3, 112, 112) RGB 0..1 -> (B, 7)
        """
        return self.net.logits(faces * 255.0)


def service_divergence(logits_original: torch.Tensor, logits_generated: torch.Tensor) -> torch.Tensor:
    """Differentiable surrogate of Eq. 8: KL(p_original || p_generated), averaged over faces (and
    over the classifiers of an ensemble, :class:`veil.qmvae.service.ExpressionEnsemble`).

    Shape:
        (B, C), (B, C) or (B, M, C), (B, M, C) -> ()
    """
    target = F.log_softmax(logits_original.detach(), dim=-1)
    generated = F.log_softmax(logits_generated, dim=-1)
    return (target.exp() * (target - generated)).sum(-1).mean()


def service_loss_rate(logits_original: torch.Tensor, logits_generated: torch.Tensor) -> float:
    """Eq. 8 averaged: the fraction of faces whose service result (argmax) changed (of an ensemble:
    the fraction of its classifiers' answers, over all faces)."""
    if len(logits_original) == 0:
        return 0.0
    return float((logits_original.argmax(-1) != logits_generated.argmax(-1)).float().mean())


class QMVAELoss(NamedTuple):
    total: torch.Tensor
    service: torch.Tensor
    mse: torch.Tensor
    codebook: torch.Tensor
    commitment: torch.Tensor


def composite(faces: torch.Tensor, original: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """What a viewer of the protected frame sees in the crop: the generated face under ``mask``,
    the original frame around it (as ``veil protect --method qmvae`` pastes it).

    Shape:
        faces, original: (B, 3, S, S); mask: (S, S) in 0..1 or None (faces alone) -> (B, 3, S, S)
    """
    if mask is None:
        return faces
    return mask * faces + (1 - mask) * original


def qmvae_loss(out: QMVAEOutput, original: torch.Tensor, service: Service | None,
               alpha: float = 0.4, beta: float = 0.25,
               service_original: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> QMVAELoss:
    """Eq. 7. ``service_original``: the service's logits on the original faces, if already
    computed (training passes the logits of the full-resolution face, as the evaluation measures
    them). ``mask``: the service judges the generated face pasted into the original crop under
    this mask (:func:`composite`), as it would judge the protected frame; the MSE is on the face.

    Shape:
        out.faces, original: (B, 3, S, S) in 0..1; mask: (S, S) -> QMVAELoss of scalars
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha weighs service against MSE and must be in [0, 1], got {alpha}")
    mse = F.mse_loss(out.faces, original)
    if service is None or alpha == 0.0:
        l_service = torch.zeros((), dtype=mse.dtype)
    else:
        if service_original is None:
            with torch.no_grad():
                service_original = service(original)
        l_service = service_divergence(service_original, service(composite(out.faces, original, mask)))
    total = alpha * l_service + (1 - alpha) * mse + out.codebook + beta * out.commitment
    return QMVAELoss(total, l_service, mse, out.codebook, out.commitment)


def search_codes(model: QMVAE, indices: torch.Tensor, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 steps: int = 8, candidates: int = 32, done: float = 0.0,
                 alternative: torch.Tensor | None = None, widest: int | None = None,
                 wide_above: float = 0.0, settled: float | None = None,
                 narrow: torch.Tensor | None = None, finalists: int | None = None,
                 kept: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Change a few codes of each face's code map where that lowers a per-face loss (the service's).

    The model's forward pass picks each cell's code for the reconstruction; the service term of
    Eq. 7 only shaped that choice in training. At protection time the service's answer on the
    original face is known, so the codes can be searched for it directly: each step takes the
    gradient of the loss at the current codebook vectors, ranks every (cell, code) swap by the
    first-order change it predicts, decodes the ``candidates`` most promising single swaps and
    keeps the best if it really lowers the loss. Where none of them does (the first-order ranking
    misjudges a decoder that is far from linear), the face's next step tries the swaps ranked
    after them, up to ``widest`` in all, before the face counts as stuck; only faces whose loss
    is still above ``wide_above`` widen, so the wider search costs time only where the narrow one
    failed and it matters. The result is still a code map of the model's codebook drawn by its
    decoder: the search chooses among the faces the model can draw, it does not paint pixels.
    Faces whose loss is at most ``done`` are left alone. ``alternative``: a second start per face
    (a video passes the previous frame's swaps carried over to this frame's codes), taken where
    its loss is lower. ``narrow``: per face, True where the face is done at a loss of ``settled``
    (not ``done``) and its search never widens past ``candidates``: in a video, a face that starts
    from the previous frame's choice, near a good one (if that choice still serves, it is kept
    unsearched). ``kept``: a narrow face whose start is at most this (above ``settled``) is left
    as it is, and one above it is searched down to ``settled``: a margin between the two, so that
    a choice searched to just under ``settled`` is not searched again on the next frame for
    drifting just over it.

    ``finalists``: where ``loss_fn`` has a ``quick`` estimate (the same call shape, cheaper: the
    service's plain view only), every candidate is scored by it and only each face's
    ``finalists`` best by ``loss_fn`` itself, which alone decides whether a swap is kept.

    Shape:
        indices, alternative: (B, s, s) long; loss_fn: faces (B', 3, S, S), face (B',) long (which
        of the B faces each row is) -> (B',) per-face loss
        -> (indices (B, s, s), loss (B,))
    """
    k = model.config.codebook_size
    cells = indices[0].numel()
    widest = min(max(widest or candidates, candidates), k * cells)
    with torch.no_grad():
        book = model.codes(torch.arange(k).view(1, k, 1))[0, :, :, 0].T  # (K, D)
        idx = indices.clone()
        loss = loss_fn(model.decode(idx), torch.arange(len(idx)))
        if alternative is not None:
            other = loss_fn(model.decode(alternative), torch.arange(len(idx)))
            better = other < loss
            idx[better], loss[better] = alternative[better], other[better]
    tried = torch.zeros(len(idx), dtype=torch.long)  # swaps of the current ranking already scored
    stuck = torch.zeros(len(idx), dtype=torch.bool)  # no swap up to `widest` helped
    limit = torch.full((len(idx),), widest, dtype=torch.long)  # how far each face's search may widen
    goal = torch.full((len(idx),), float(done), dtype=loss.dtype)  # the loss at which a face is done
    if narrow is not None:
        limit[narrow] = min(candidates, widest)
        if settled is not None:
            goal[narrow] = max(float(settled), float(done))
        if kept is not None:
            stuck |= narrow & (loss <= kept)
    for _ in range(steps):
        active = torch.nonzero((loss > goal) & ~stuck).flatten()
        if len(active) == 0:
            break
        z = model.codes(idx[active]).detach().requires_grad_(True)  # (A, D, s, s)
        (grad,) = torch.autograd.grad(loss_fn(model.decoder(z), active).sum(), z)
        with torch.no_grad():
            # predicted change of a swap at cell (h, w) to code j: <grad, e_j - z>
            gain = torch.einsum("adhw,kd->akhw", grad, book) - (grad * z).sum(1, keepdim=True)
            ranked = gain.flatten(1).topk(widest, largest=False).indices  # (A, widest) into (K, s, s)
            for start in tried[active].unique().tolist():
                group = torch.nonzero(tried[active] == start).flatten()
                faces = active[group]
                m = (min(candidates, widest) if start == 0 else widest) - start
                top = ranked[group, start:start + m]
                code, cell = top // cells, top % cells
                trial = idx[faces].flatten(1).unsqueeze(1).repeat(1, m, 1)  # (G, m, s*s)
                trial.scatter_(2, cell.unsqueeze(-1), code.unsqueeze(-1))
                trial = trial.view(-1, *idx.shape[1:])
                scores = _scored(model.decode(trial), faces, m, loss_fn, finalists)
                best, which = scores.min(1)
                better = best < loss[faces]
                rows = faces[better]
                idx[rows] = trial.view(len(faces), m, *idx.shape[1:])[better, which[better]]
                loss[rows] = best[better]
                tried[rows] = 0
                failed = faces[~better]
                widen = (start + m < limit[failed]) & (loss[failed] > wide_above)
                tried[failed] = start + m
                stuck[failed] = ~widen
    return idx, loss


def _scored(decoded: torch.Tensor, faces: torch.Tensor, m: int, loss_fn: Callable, finalists: int | None) -> torch.Tensor:
    """The loss of each face's ``m`` decoded candidates (see `search_codes`' ``finalists``): inf
    where a candidate was screened out by ``loss_fn.quick``. Shape: decoded (G*m, 3, S, S) -> (G, m)"""
    owner = faces.repeat_interleave(m)
    quick = getattr(loss_fn, "quick", None)
    if quick is None or not finalists or finalists >= m:
        return loss_fn(decoded, owner).view(len(faces), m)
    keep = quick(decoded, owner).view(len(faces), m).topk(finalists, dim=1, largest=False).indices
    rows = (keep + torch.arange(len(faces)).unsqueeze(1) * m).flatten()
    scores = torch.full((len(faces), m), float("inf"))
    scores.scatter_(1, keep, loss_fn(decoded[rows], owner[rows]).view(len(faces), finalists))
    return scores
