"""The expression service as an ensemble: every expression classifier veil ships, each in its crop.

One classifier steering the code search finds codes that this one network reads as the original's
expression, not an expression (bench/qmvae_table.py: face-api's answer kept on every face, Human's
lost on nine in ten). The ensemble's answer is what several networks of different origin, input
and crop agree on:

- ``faceapi``: face-api's :class:`veil.models.expression.ExpressionNet`, RGB 112 px, its crop
  (:data:`veil.align.EXPRESSION_CROP`, padding 0.2, about a detector's box);
- ``human``: Human's :class:`veil.models.emotion.HumanEmotion`, grey 64 px, Human's box 1.4x a
  detector's (padding 0.48 of the mean face);
- ``fer``: fer's :class:`veil.models.fer.FerEmotion`, grey 64 px, the box squared and widened by 10
  pixels a side (about 1.2x: padding 0.34).

Here every member takes the face aligned by its landmarks (a similarity transform, as veil cuts
every face) at its own size and padding, resampled from one shared crop that holds them all
(:data:`SHARED_CROP`), so the search renders the shown face once per view; a lone member takes
its own crop directly. A member's own
pipeline (its own box crop, :meth:`probabilities`) is what a judge runs: bench/qmvae_table.py
leaves each member out of the ensemble in turn and judges with it.

Outputs are log-probabilities in :data:`veil.models.expression.EXPRESSIONS` order, stacked per
member: (B, M, 7). :func:`veil.qmvae.model.service_divergence` and the search average the members'
KL divergences, so each counts the same whatever its confidence.

:class:`ExpressionGeometry` measures the expression in the face's shape instead of a classifier's
answer: face-api's 68 landmarks (:class:`veil.models.landmarks68.Landmark68Net`) on the face at
:data:`LANDMARK_CROP`, turned into mouth opening and width, eyebrow height and eye opening
(:func:`veil.models.landmarks68.expression_geometry`); training can hold the drawn face to the
original's geometry (``veil train qmvae --geometry-weight``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from veil.align import EXPRESSION_CROP, CropSpec
from veil.qmvae.model import crop_to_spec

__all__ = ["LANDMARK_CROP", "MEMBERS", "SHARED_CROP", "ExpressionEnsemble", "ExpressionGeometry", "parse_members",
           "service_for"]

MEMBERS = ("faceapi", "human", "fer")
"""Every expression classifier veil ships, in the order their outputs are stacked."""
SHARED_CROP = CropSpec(160, 0.5)
"""The crop the members' crops are resampled from: the widest member's, at face-api's resolution."""
_CROPS = {"faceapi": EXPRESSION_CROP, "human": CropSpec(64, 0.48), "fer": CropSpec(64, 0.34)}
LANDMARK_CROP = EXPRESSION_CROP
"""Where the 68-landmark net sees a face: veil's aligned crop at padding 0.2, about a detector's box
(face-api feeds it its detector's box). Its geometry follows that of dlib's 68 points on the
store's photos with correlations 0.86 (mouth opening), 0.86 (width), 0.77 (brows), 0.71 (eyes)
(tests/models/test_landmarks68.py); padding 0.1-0.4 all came within 0.15 of that."""
_GREY = torch.tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)  # Human's weights; fer's BT.601 ones agree to 1e-3


def parse_members(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"faceapi,fer"`` -> ("faceapi", "fer"), checked, in :data:`MEMBERS` order."""
    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    unknown = sorted(set(wanted) - set(MEMBERS))
    if unknown or not wanted:
        raise ValueError(f"expression classifiers are {', '.join(MEMBERS)}; got {', '.join(unknown) or 'none'}")
    return tuple(n for n in MEMBERS if n in wanted)


def resampling(source: CropSpec, target: CropSpec) -> torch.Tensor:
    """The 1-D bilinear weights that take a face in ``source`` to ``target`` (same centre; zero
    outside), as :func:`veil.qmvae.model.crop_to_spec` samples it, as a matrix: applied to rows
    and columns it resamples with two matrix products, which ONNX Runtime runs (its grid sampling
    needs a newer opset than torch exports).

    Shape: -> (target.size, source.size)
    """
    scale = (1 + 2 * target.padding) / (1 + 2 * source.padding)
    u = torch.arange(target.size, dtype=torch.float64)
    x = ((scale * ((2 * u + 1) / target.size - 1) + 1) * source.size - 1) / 2  # source pixel coordinates
    left = torch.floor(x)
    weights = torch.zeros(target.size, source.size, dtype=torch.float64)
    for pixel, w in ((left, 1 - (x - left)), (left + 1, x - left)):
        ok = (pixel >= 0) & (pixel <= source.size - 1)
        weights[u[ok].long(), pixel[ok].long()] += w[ok]
    return weights.float()


def _network(name: str) -> nn.Module:
    if name == "faceapi":
        from veil.models.expression import ExpressionNet

        return ExpressionNet.pretrained()
    if name == "human":
        from veil.models.emotion import HumanEmotion

        return HumanEmotion.pretrained()
    from veil.models.fer import FerEmotion

    return FerEmotion.pretrained()


class _Members(nn.Module):
    """The members on faces in :data:`SHARED_CROP`: (B, 3, S, S) RGB 0..255 -> (B, M * 7) probabilities
    (a plain tensor in and out, so ONNX Runtime can run it for the search's candidates)."""

    def __init__(self, names: tuple[str, ...], source: CropSpec = SHARED_CROP) -> None:
        super().__init__()
        self.names = names
        self.nets = nn.ModuleList(_network(n) for n in names)
        for p in self.parameters():
            p.requires_grad_(False)
        for n in names:  # none where the member's crop is the source (a lone member): nothing to resample
            weights = None if _CROPS[n] == source else resampling(source, _CROPS[n])
            self.register_buffer(f"to_{n}", weights, persistent=False)

    def log_probs(self, faces: torch.Tensor) -> torch.Tensor:
        """Shape: (B, 3, S, S) RGB 0..1 in `source` -> (B, M, 7) log-probabilities."""
        out = []
        for name, net in zip(self.names, self.nets):
            weights = getattr(self, f"to_{name}")
            x = faces if weights is None else torch.matmul(torch.matmul(weights, faces), weights.T)  # rows, then columns
            if name == "faceapi":
                out.append(F.log_softmax(net.logits(x * 255.0), -1))
                continue
            grey = ((x * _GREY.to(x)).sum(1, keepdim=True) - 0.5) * 2.0
            out.append(F.log_softmax(net.logits(grey), -1) if name == "fer" else torch.log(net(grey).clamp_min(1e-12)))
        return torch.stack(out, 1)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.log_probs(faces / 255.0).exp().flatten(1)


@dataclass
class ExpressionEnsemble:
    """QM-VAE's service as an ensemble of expression classifiers (see the module docstring).

    Shape:
        __call__(faces): (B, 3, S, S) RGB 0..1 in ``crop`` -> (B, M, 7) log-probabilities
    """

    crop: CropSpec
    members: tuple[str, ...] = MEMBERS
    own_crop: CropSpec = field(init=False)
    """The crop :meth:`on_own_crop` takes faces in: :data:`SHARED_CROP`, or a lone member's own."""
    module: _Members = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.members = parse_members(self.members)
        self.own_crop = _CROPS[self.members[0]] if len(self.members) == 1 else SHARED_CROP
        self.module = _Members(self.members, self.own_crop).eval()

    @property
    def name(self) -> str:
        return "expression-" + "-".join(self.members)

    def __call__(self, faces: torch.Tensor) -> torch.Tensor:
        return self.module.log_probs(crop_to_spec(faces, self.crop, self.own_crop))

    def on_own_crop(self, faces: torch.Tensor) -> torch.Tensor:
        """Shape: (B, 3, S, S) RGB 0..1 cut from the frame in :attr:`own_crop` -> (B, M, 7)."""
        return self.module.log_probs(faces)


def service_for(crop: CropSpec, members: str | tuple[str, ...] = "faceapi"):  # noqa: ANN201 - either service
    """The service of ``members`` for faces in ``crop``: face-api's alone is
    :class:`veil.qmvae.model.ExpressionService` (logits, what the shipped model trained with), any
    other set an :class:`ExpressionEnsemble`."""
    names = parse_members(members)
    if names == ("faceapi",):
        from veil.qmvae.model import ExpressionService

        return ExpressionService(crop)
    return ExpressionEnsemble(crop, names)


@dataclass
class ExpressionGeometry:
    """The expression geometry of faces in ``crop`` (differentiable).

    Shape:
        __call__(faces): (B, 3, S, S) RGB 0..1 in ``crop`` -> (B, 4), columns
        :data:`veil.models.landmarks68.GEOMETRY`, in eye distances
    """

    crop: CropSpec
    net: nn.Module = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.net is None:
            from veil.models.landmarks68 import Landmark68Net

            self.net = Landmark68Net.pretrained()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def __call__(self, faces: torch.Tensor) -> torch.Tensor:
        from veil.models.landmarks68 import expression_geometry

        points = self.net(crop_to_spec(faces, self.crop, LANDMARK_CROP) * 255.0) * LANDMARK_CROP.size
        return expression_geometry(points)
