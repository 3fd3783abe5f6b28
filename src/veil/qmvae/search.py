"""QM-VAE's code search at protection time: the service it keeps (:class:`ServiceSearch`) and the
identity guard that keeps the search from drawing the person (:class:`IdentityGuard`); see
:mod:`veil.qmvae.protector` for how they are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from veil.align import CropSpec, crop_faces
from veil.qmvae.deidentify import deidentify_batch
from veil.qmvae.paste import draw, inside_frame, renderer

if TYPE_CHECKING:  # the model (torch, vector-quantize-pytorch) loads only when the method is used
    from veil.models.identity import IdentityModel
    from veil.models.onnx_runtime import FrozenNet
    from veil.qmvae.model import QMVAE
    from veil.qmvae.service import ExpressionEnsemble

__all__ = ["generate", "ServiceSearch", "IdentityGuard", "with_identity", "face_rolls", "in_frame"]


def generate(model: QMVAE, crops: np.ndarray, rng: np.random.Generator, keep: ServiceSearch | None = None,
             own_crops: np.ndarray | None = None, inside: np.ndarray | None = None,
             carried: list[tuple | None] | None = None,
             rolls: np.ndarray | None = None) -> tuple[np.ndarray, list[tuple]]:
    """The model's faces for aligned crops: de-identify each the model's ways, decode; with
    ``keep``, search the codes for the service's answer on the original (``own_crops``: the same
    faces in the service's own crop, cut from the frame; ``inside``: 1 where that crop lies in the
    frame, which is where a pasted face shows).

    ``carried``: per face, the (encoder's, chosen) code maps of the same person in the previous
    frame, or None. Where the search had swapped a code there, the swap is tried again here as a
    second start: the face keeps the choice it had unless this frame's own codes serve better,
    which steadies the face from frame to frame and saves search steps. ``rolls``: each face's
    turn in the frame (:func:`face_rolls`), for the search's view of it as it lies there.

    Shape:
        crops: (N, S, S, 3) uint8; own_crops: (N, S', S', 3) uint8; inside: (N, S', S') float; rolls (N,)
        -> faces (N, S, S, 3) uint8, and per face the (encoder's, chosen) code maps (s, s)
    """
    import torch

    cfg = model.config
    x = deidentify_batch(crops, cfg.inputs, cfg.crop, rng)
    with torch.no_grad():
        _, indices = model.quantize(model.encode(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0))
    encoded = indices
    if keep is not None and keep.steps > 0:
        if own_crops is None or inside is None:
            raise ValueError("a service search needs the faces in the service's own crop and where it is in the frame")
        alternative = None
        if carried and any(c is not None for c in carried):
            alternative = indices.clone()
            for i, c in enumerate(carried):
                if c is not None:
                    swapped = c[1] != c[0]
                    alternative[i][swapped] = c[1][swapped]
        narrow = None if alternative is None else torch.tensor([c is not None for c in carried])
        indices = keep.search(model, indices, keep.loss(own_crops, inside, rolls), alternative, narrow)
    return draw(model, indices), list(zip(encoded, indices))


def with_identity(service, identity, weight: float):  # noqa: ANN001, ANN201 - torch closures
    """A per-face search loss: the ``service``'s plus ``weight`` times the ``identity`` guard's
    (`IdentityGuard.loss`, built for the same faces). Carries the service's ``quick`` screen, with
    the identity term in full: the recognizer sees every candidate."""

    def per_face(faces: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return service(faces, face) + weight * identity(faces, face)

    quick = getattr(service, "quick", None)
    if quick is not None:
        per_face.quick = lambda faces, face: quick(faces, face) + weight * identity(faces, face)
    return per_face


@dataclass
class ServiceSearch:
    """The service that the code search keeps, and how hard it searches.

    ``mask``: the paste mask in the model's crop (the service judges the shown face: generated
    under the mask, the original crop around it, as in training).
    """

    service: ExpressionEnsemble
    mask: np.ndarray
    frozen: FrozenNet | None = None
    """The service's forward pass by ONNX Runtime (probabilities), for the candidates the search
    only scores; the gradient step runs the torch module."""
    steps: int = 8
    candidates: int = 32
    """Swaps decoded and scored per face and step, the best-ranked by the gradient. In a video
    (`veil protect` then `veil evaluate`, 2 cores; an earlier 64-pixel model searched for
    face-api's answer alone): 32 with 8 finalists, 5.6 frames/s and face-api's answer kept on
    84.3% of WolfgangLanger_Pexels.mp4's frames; 64 with 16, 3.4 frames/s and 85.2%
    (on single_face.mp4 6.7 and 98.6% against 4.6 and 97.2%: one frame's search swings a short
    clip either way)."""
    widest: int = 256
    """Swaps a face whose ``candidates`` best-ranked swaps all fail tries in all, before it stops."""
    wide_above: float = 0.1
    """Only faces whose KL is above this widen: below it the original's top answer keeps about 90%
    of its probability (where the original is sure of it), and the narrow search's result stands."""
    done: float = 0.003
    """Faces whose divergence (KL, nats) from the original's service output is at most this are
    left as they are."""
    settled: float | None = 0.1
    """In a video, a tracked face starts from its previous frame's choice, carried to this frame's
    codes, and is searched only down to this divergence, not to ``done`` (None: every frame
    searched down to ``done``). On single_face.mp4 with an earlier 64-pixel model: 3.1 frames/s and
    face-api's answer kept on 96% of the frames, against 2.1 frames/s and 99% searching every
    frame down to ``done``."""
    kept: float | None = 0.3
    """A tracked face whose carried choice is within this divergence is drawn with it unsearched;
    one beyond it is searched down to ``settled``. On single_face.mp4 with the three classifiers
    (the 96-pixel model), 0.3 against 0.1: 2.4 frames/s against 1.9, and the three keep their
    answer on 97/90/97% of the frames (face-api's, Human's, fer's) against 93/79/99%."""
    views: int = 3
    """Renderings the loss is the worst of: the plain one and ``views - 1`` slightly moved,
    scaled and turned (by at most 1 pixel, 3% and 2 degrees, fixed per call). A code map that
    keeps the service's answer only at the exact pixels is an accident of resampling; one that
    keeps it under all of them survives the paste, the encoder and a re-detection. For a face
    turned in the frame, the second view is the face as it lies there (see ``turned_above``)."""
    finalists: int | None = 8
    """Candidates of a step scored on every view: all are scored on the plain view first, and each
    face's ``finalists`` best of them on all ``views``, which alone decide (None: every candidate
    on every view). With 32 candidates and 3 views: 56 renderings judged instead of 96. On
    single_face.mp4 (the same earlier model), 16 finalists of 64 candidates chose the same swaps
    as all 64 in 3 views, and 8 of 32 the same as all 32 (6.7 frames/s against 5.7), on every
    frame."""

    turned_above: float = 4.0
    """A face turned more than this (degrees) in the frame has its second view turned back by it
    (see :meth:`loss`); one turned less keeps the slightly moved view. A service that cuts the
    detector's box does not straighten the face (Human's and fer's pipelines): on the 116
    held-out faces (turned 13 degrees on average, up to 49) Human's net names another expression
    on the straightened crop than on its own cut for 9% of the originals. With this view the
    search loses Human's answer on 17% of them instead of 23% (face-api's 1.7% against 0.9%,
    fer's 6.9% either way; turning every face's second view: 15.5%, but on
    WolfgangLanger_Pexels.mp4 fer's agreement fell from 86% to 78%)."""

    def search(self, model: QMVAE, indices, loss_fn, alternative=None, carried=None, steps=None):  # noqa: ANN001, ANN201 - torch tensors
        """:func:`veil.qmvae.model.search_codes` with these settings: the chosen code maps.
        ``carried``: per face, True where ``alternative`` is the previous frame's choice (such a
        face starts near a good choice: it is kept within ``kept``, else searched down to ``settled``
        only, and narrowly).
        ``steps``: another step budget than ``self.steps``.

        Shape: indices, alternative (B, s, s) long; carried (B,) bool -> (B, s, s) long
        """
        from veil.qmvae.model import search_codes

        found, _ = search_codes(model, indices, loss_fn, self.steps if steps is None else steps, self.candidates,
                                self.done, alternative, self.widest, self.wide_above, self.settled, carried,
                                self.finalists, self.kept)
        return found

    def loss(self, own_crops: np.ndarray, inside: np.ndarray,  # noqa: ANN201 - a torch closure
             rolls: np.ndarray | None = None):
        """Per-face KL(service(original) || service(shown)) for :func:`search_codes`.

        The shown face is rendered as the protection pastes it, straight into the service's crop:
        the generated face resampled there, under the paste mask where the crop lies in the frame,
        the original frame around it.

        ``rolls``: each face's roll in the frame (degrees, the eye line's angle). With them, one
        of the ``views`` is the face turned back to how it lies in the frame, as a service that
        cuts a detector's box without straightening the face sees it (Human's and fer's own
        pipelines do); its divergence is from the original seen the same way.

        Shape: own_crops (N, S', S', 3) uint8, inside (N, S', S') float 0..1 (service crop), rolls (N,)
        """
        import torch
        import torch.nn.functional as F

        svc = self.service
        own, render = renderer(own_crops, inside, self.mask, svc.crop, svc.own_crop)
        jitter = np.random.default_rng(0).uniform(-1, 1, (max(self.views - 1, 0), 4))  # the same views every call
        thetas = [torch.eye(2, 3)]
        for shift_x, shift_y, scale, turn in jitter:
            c, s = np.cos(np.radians(2 * turn)) * (1 + 0.03 * scale), np.sin(np.radians(2 * turn)) * (1 + 0.03 * scale)
            step = 2.0 / own.shape[-1]  # one pixel in grid units
            thetas.append(torch.tensor([[c, -s, shift_x * step], [s, c, shift_y * step]], dtype=torch.float32))
        thetas = [theta.expand(len(own), 2, 3) for theta in thetas]
        turned = torch.zeros(len(own), dtype=torch.bool)  # faces whose second view is the frame's turn
        if rolls is not None and len(thetas) > 1:
            turned = torch.from_numpy(np.abs(np.asarray(rolls)) > self.turned_above)
            thetas[1] = torch.where(turned[:, None, None], in_frame(rolls), thetas[1])

        def moved(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            return F.grid_sample(x, grid, padding_mode="border", align_corners=False)

        with torch.no_grad():
            plain = F.log_softmax(svc.on_own_crop(own), -1)
            # (V, N, ...): each view's divergence is from the plain original, but that of the face
            # in the frame's own turn is from the original seen the same way
            targets = torch.stack([plain] * len(thetas))
            if turned.any():
                targets[1, turned] = F.log_softmax(svc.on_own_crop(moved(own[turned], thetas[1][turned])), -1)

        def per_face(faces: torch.Tensor, face: torch.Tensor, views_used: int | None = None) -> torch.Tensor:
            shown = render(faces, face)
            views = [shown] + [moved(shown, theta[face]) for theta in thetas[1:views_used]]
            batch = torch.cat(views)
            if self.frozen is not None and not torch.is_grad_enabled():
                probs = torch.from_numpy(self.frozen(batch.numpy() * 255.0)).view(len(batch), *targets.shape[2:])
                logp = torch.log(probs.clamp_min(1e-12))
            else:
                logp = F.log_softmax(svc.on_own_crop(batch), -1)
            t = targets[:len(views), face].flatten(0, 1)
            kl = (t.exp() * (t - logp)).sum(-1)
            if kl.dim() > 1:  # an ensemble: its classifiers' divergences averaged
                kl = kl.mean(-1)
            return kl.view(len(views), -1).amax(0)

        per_face.quick = lambda faces, face: per_face(faces, face, 1)  # the plain view: a screen for `search_codes`
        return per_face


def in_frame(rolls: np.ndarray):  # noqa: ANN201 - a torch tensor
    """Sampling grids' affine maps that turn upright (aligned) crops back by each face's roll, to
    how the face lies in the frame. Shape: rolls (N,) degrees -> (N, 2, 3)"""
    import torch

    a = np.radians(np.asarray(rolls, np.float64))
    c, s, z = np.cos(a), np.sin(a), np.zeros_like(a)
    return torch.from_numpy(np.stack([np.stack([c, s, z], -1), np.stack([-s, c, z], -1)], 1).astype(np.float32))


def face_rolls(landmarks: np.ndarray) -> np.ndarray:
    """Each face's roll: the angle of its eye line in the frame (degrees, y down). Shape: (N, 5, 2) -> (N,)"""
    eyes = landmarks[:, 1] - landmarks[:, 0]
    return np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))


@dataclass
class IdentityGuard:
    """A recognizer (dlib's ResNet) as the judge of how close a searched face comes to its original.

    ``limit``: the descriptor distance a shown face must keep from its original (the recognizer's
    match threshold plus ``GUARD_MARGIN``). ``aim``: how much further the search's loss asks for: its
    rendering of the pasted face differs slightly from the real paste (rounding to 8 bits, the crop
    cut again from the frame), by up to about 0.01 in distance, and a face searched to exactly the
    limit would land just inside it.
    """

    recognizer: IdentityModel
    limit: float
    aim: float = 0.03
    steps: int = 4
    """Steps of the search for the service and the distance together, where the service's own
    search drew a face too close; a face still too close after them is drawn from the model's
    own codes. (Each step renders its candidates through the recognizer as well as the service:
    about 0.4 s on 2 cores, where 8 steps made a frame of a video cost 3 s.)"""

    def descriptors(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Shape: frame (H, W, 3) uint8, landmarks (N, 5, 2) -> (N, 128)"""
        return self.recognizer.describe([frame], [landmarks])

    def distances(self, reference: np.ndarray, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Descriptor distance of each face in ``frame`` from its ``reference``. Shape: -> (N,)"""
        return np.linalg.norm(self.descriptors(frame, landmarks) - reference, axis=-1)

    def loss(self, frame: np.ndarray, landmarks: np.ndarray, reference: np.ndarray,  # noqa: ANN201 - a torch closure
             spec: CropSpec, mask: np.ndarray):
        """Per-face shortfall of the distance below the limit (and ``aim``), for :func:`search_codes`:
        0 when the face rendered as pasted (``spec``: the model's crop, ``mask``: the paste mask) is
        far enough.

        Shape: landmarks (N, 5, 2), reference (N, 128)
        """
        import torch
        import torch.nn.functional as F

        crop = self.recognizer.crop
        _, render = renderer(crop_faces(frame, landmarks, crop), inside_frame(frame, landmarks, crop), mask, spec, crop)
        ref = torch.from_numpy(np.ascontiguousarray(reference, np.float32))
        goal = self.limit + self.aim

        def per_face(faces: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
            shown = render(faces, face) * 255.0  # the recognizer takes 0..255
            if not torch.is_grad_enabled():
                desc = torch.from_numpy(self.recognizer.run(shown.numpy()))
            else:
                desc = self.recognizer.net(shown)
            return F.relu(goal - (desc - ref[face]).norm(dim=-1))

        return per_face
