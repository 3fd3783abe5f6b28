"""``--method qmvae``: every face replaced by QM-VAE's fusion of its de-identifications.

Per face per frame: align to the model's crop, de-identify it the model's ways (its checkpoint
names them), run the model, paste the generated crop back under a feathered ellipse. The original
face only ever reaches the model through those de-identified versions.

Service search (``service_steps``, default 8; 0 is the paper's plain forward pass): the service's
answer on the original face (face-api's expression classifier, the service the model is trained
for) is known at protection time, so the model's code map is then searched for it
(:func:`veil.models.qmvae.search_codes`): a few of the codes the encoder chose are swapped for
other entries of the codebook where that brings the service's output on the shown face (the
generated face under the mask, the frame around it) closer to its output on the original. The
face is still drawn by the model's decoder from its codebook, so the search chooses among faces
the model can draw; it never copies pixels of the original. Only the service's 7 probabilities
of the original steer it. In a video, each tracked face starts from its swaps of the previous
frame. Privacy is checked, not assumed: :class:`IdentityGuard` measures each searched face against
its original with dlib's ResNet, searches again with the distance in the loss where it came
close, and undoes the search where that fails. bench/qmvae_table.py measures what is kept with
that classifier and with a second, independent one, and the re-identification rate; the search
costs about 10x the forward pass's time.

The model is loaded when the protection is built, so a missing or broken checkpoint stops the run
before any frame is written. With no ``checkpoint`` option the shipped model
(``src/veil/weights/qmvae.pt``, made by ``python -m veil.qmvae_train --default``) is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from veil.align import RECOGNIZER_CROP, CropSpec, crop_faces, paste_faces
from veil.faces import Faces
from veil.protect.base import ProtectState, register, rng_for

if TYPE_CHECKING:  # the model (torch, vector-quantize-pytorch) loads only when the method is used
    from torch import nn

    from veil.models.onnx_runtime import FrozenNet
    from veil.models.qmvae import QMVAE, ExpressionService

__all__ = ["QMVAEProtect", "ServiceSearch", "IdentityGuard", "soft_ellipse", "generate", "GUARD_MARGIN",
           "IDENTITY_WEIGHT"]

GUARD_MARGIN = 0.05
"""The searched face must stay this much beyond dlib's match distance (0.6) from the original."""
IDENTITY_WEIGHT = 10.0
"""Weight of the distance shortfall (in descriptor units) against the service's KL when the guard
searches again: privacy first."""


def soft_ellipse(size: int, radius: float = 0.47, feather: float = 0.08) -> np.ndarray:
    """A feathered ellipse mask over the crop's face (1 inside, fading to 0 over ``feather``).

    ``radius`` and ``feather`` are fractions of the crop size; the ellipse is centred slightly
    below the crop's centre, where the aligned face's centre sits, and is 10% taller than wide.

    Shape:
        -> (size, size) float32 in 0..1
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx, cy = size / 2, size * 0.53
    r = np.sqrt(((xx - cx) / (radius * size)) ** 2 + ((yy - cy) / (1.1 * radius * size)) ** 2)
    edge = max(feather / radius, 1e-6)
    mask = np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0)
    return cv2.GaussianBlur(mask, (0, 0), max(0.5, feather * size / 4))


def _draw(model: QMVAE, indices) -> np.ndarray:  # noqa: ANN001 - a torch tensor
    """The decoder's faces for code maps. Shape: (N, s, s) long -> (N, S, S, 3) uint8"""
    import torch

    with torch.no_grad():
        faces = model.decode(indices)
    return np.clip(np.rint(faces.permute(0, 2, 3, 1).numpy() * 255.0), 0, 255).astype(np.uint8)


def _inside_frame(frame: np.ndarray, landmarks: np.ndarray, spec: CropSpec) -> np.ndarray:
    """1 where each face's ``spec`` crop lies in the frame (where a pasted face shows), 0 outside.

    Shape: -> (N, spec.size, spec.size) float in 0..1
    """
    return crop_faces(np.full_like(frame, 255), landmarks, spec)[..., 0] / 255.0


def _renderer(own_crops: np.ndarray, inside: np.ndarray, mask: np.ndarray,  # noqa: ANN202 - torch closures
              source: CropSpec, target: CropSpec):
    """How a generated face shows in another crop once pasted: resampled from ``source`` (the
    model's crop) to ``target``, under the paste ``mask`` where the crop lies in the frame, the
    original frame (``own_crops``, cut in ``target``) around it.

    Shape: own_crops (N, T, T, 3) uint8, inside (N, T, T), mask (S, S) -> (own (N, 3, T, T) 0..1,
        shown(faces (B', 3, S, S) 0..1, face (B',) long) -> (B', 3, T, T) 0..1)
    """
    import torch

    from veil.models.qmvae import composite, crop_to_spec

    own = torch.from_numpy(np.ascontiguousarray(own_crops)).permute(0, 3, 1, 2).float() / 255.0
    paste = crop_to_spec(torch.from_numpy(mask)[None, None], source, target)[:, 0]
    paste = (paste * torch.from_numpy(np.ascontiguousarray(inside, np.float32)))[:, None]  # (N, 1, T, T)

    def shown(faces: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return composite(crop_to_spec(faces, source, target), own[face], paste[face])

    return own, shown


def generate(model: QMVAE, crops: np.ndarray, rng: np.random.Generator, keep: ServiceSearch | None = None,
             own_crops: np.ndarray | None = None, inside: np.ndarray | None = None,
             carried: list[tuple | None] | None = None) -> tuple[np.ndarray, list[tuple]]:
    """The model's faces for aligned crops: de-identify each the model's ways, decode; with
    ``keep``, search the codes for the service's answer on the original (``own_crops``: the same
    faces in the service's own crop, cut from the frame; ``inside``: 1 where that crop lies in the
    frame, which is where a pasted face shows).

    ``carried``: per face, the (encoder's, chosen) code maps of the same person in the previous
    frame, or None. Where the search had swapped a code there, the swap is tried again here as a
    second start: the face keeps the choice it had unless this frame's own codes serve better,
    which steadies the face from frame to frame and saves search steps.

    Shape:
        crops: (N, S, S, 3) uint8; own_crops: (N, S', S', 3) uint8; inside: (N, S', S') float
        -> faces (N, S, S, 3) uint8, and per face the (encoder's, chosen) code maps (s, s)
    """
    import torch

    from veil.qmvae_data import deidentify_batch

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
        indices = keep.search(model, indices, keep.loss(own_crops, inside), alternative)
    return _draw(model, indices), list(zip(encoded, indices))


@dataclass
class ServiceSearch:
    """The service that the code search keeps, and how hard it searches.

    ``mask``: the paste mask in the model's crop (the service judges the shown face: generated
    under the mask, the original crop around it, as in training).
    """

    service: ExpressionService
    mask: np.ndarray
    frozen: FrozenNet | None = None
    """The service's forward pass by ONNX Runtime (probabilities), for the candidates the search
    only scores; the gradient step runs the torch module."""
    steps: int = 8
    candidates: int = 64
    widest: int = 256
    """Swaps a face whose ``candidates`` best-ranked swaps all fail tries in all, before it stops."""
    wide_above: float = 0.1
    """Only faces whose KL is above this widen: below it the original's top answer keeps about 90%
    of its probability (where the original is sure of it), and the narrow search's result stands."""
    done: float = 0.003
    """Faces whose divergence (KL, nats) from the original's service output is at most this are
    left as they are."""
    views: int = 3
    """Renderings the loss is the worst of: the plain one and ``views - 1`` slightly moved,
    scaled and turned (by at most 1 pixel, 3% and 2 degrees, fixed per call). A code map that
    keeps the service's answer only at the exact pixels is an accident of resampling; one that
    keeps it under all of them survives the paste, the encoder and a re-detection."""

    def search(self, model: QMVAE, indices, loss_fn, alternative=None):  # noqa: ANN001, ANN201 - torch tensors
        """:func:`veil.models.qmvae.search_codes` with these settings: the chosen code maps.

        Shape: indices, alternative (B, s, s) long -> (B, s, s) long
        """
        from veil.models.qmvae import search_codes

        found, _ = search_codes(model, indices, loss_fn, self.steps, self.candidates, self.done, alternative,
                                self.widest, self.wide_above)
        return found

    def loss(self, own_crops: np.ndarray, inside: np.ndarray):  # noqa: ANN201 - a torch closure
        """Per-face KL(service(original) || service(shown)) for :func:`search_codes`.

        The shown face is rendered as the protection pastes it, straight into the service's crop:
        the generated face resampled there, under the paste mask where the crop lies in the frame,
        the original frame around it.

        Shape: own_crops (N, S', S', 3) uint8, inside (N, S', S') float 0..1 (service crop)
        """
        import torch
        import torch.nn.functional as F

        svc = self.service
        own, render = _renderer(own_crops, inside, self.mask, svc.crop, svc.own_crop)
        with torch.no_grad():
            target = F.log_softmax(svc.on_own_crop(own), -1)

        jitter = np.random.default_rng(0).uniform(-1, 1, (max(self.views - 1, 0), 4))  # the same views every call
        thetas = [torch.eye(2, 3)]
        for shift_x, shift_y, scale, turn in jitter:
            c, s = np.cos(np.radians(2 * turn)) * (1 + 0.03 * scale), np.sin(np.radians(2 * turn)) * (1 + 0.03 * scale)
            step = 2.0 / own.shape[-1]  # one pixel in grid units
            thetas.append(torch.tensor([[c, -s, shift_x * step], [s, c, shift_y * step]], dtype=torch.float32))

        def per_face(faces: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
            shown = render(faces, face)
            views = [shown]
            for theta in thetas[1:]:
                grid = F.affine_grid(theta.expand(len(shown), 2, 3), list(shown.shape), align_corners=False)
                views.append(F.grid_sample(shown, grid, padding_mode="border", align_corners=False))
            batch = torch.cat(views)
            if self.frozen is not None and not torch.is_grad_enabled():
                probs = torch.from_numpy(self.frozen(batch.numpy() * 255.0))
                logp = torch.log(probs.clamp_min(1e-12))
            else:
                logp = F.log_softmax(svc.on_own_crop(batch), -1)
            t = target[face].repeat(len(views), 1)
            return (t.exp() * (t - logp)).sum(-1).view(len(views), -1).amax(0)

        return per_face


@dataclass
class IdentityGuard:
    """dlib's ResNet as the judge of how close a searched face comes to its original.

    ``limit``: the descriptor distance a shown face must keep from its original (the recognizer's
    match threshold plus ``GUARD_MARGIN``). ``aim``: how much further the search's loss asks for: its
    rendering of the pasted face differs slightly from the real paste (rounding to 8 bits, the crop
    cut again from the frame), by up to about 0.01 in distance, and a face searched to exactly the
    limit would land just inside it.
    """

    net: nn.Module
    frozen: FrozenNet
    limit: float
    aim: float = 0.03

    def descriptors(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Shape: frame (H, W, 3) uint8, landmarks (N, 5, 2) -> (N, 128)"""
        crops = crop_faces(frame, landmarks, RECOGNIZER_CROP)
        return self.frozen(crops.transpose(0, 3, 1, 2).astype(np.float32))

    def distances(self, reference: np.ndarray, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Descriptor distance of each face in ``frame`` from its ``reference``. Shape: -> (N,)"""
        return np.linalg.norm(self.descriptors(frame, landmarks) - reference, axis=-1)

    def loss(self, frame: np.ndarray, landmarks: np.ndarray, reference: np.ndarray,  # noqa: ANN201 - a torch closure
             spec: CropSpec, mask: np.ndarray):
        """Per-face shortfall of the distance below the limit, for :func:`search_codes`: 0 when the
        face rendered as pasted (``spec``: the model's crop, ``mask``: the paste mask) is far enough.

        Shape: landmarks (N, 5, 2), reference (N, 128)
        """
        import torch
        import torch.nn.functional as F

        _, render = _renderer(crop_faces(frame, landmarks, RECOGNIZER_CROP),
                              _inside_frame(frame, landmarks, RECOGNIZER_CROP), mask, spec, RECOGNIZER_CROP)
        ref = torch.from_numpy(np.ascontiguousarray(reference, np.float32))

        def per_face(faces: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
            shown = render(faces, face) * 255.0  # the recognizer takes 0..255
            if not torch.is_grad_enabled():
                desc = torch.from_numpy(self.frozen(shown.numpy()))
            else:
                desc = self.net(shown)
            return F.relu(self.limit + self.aim - (desc - ref[face]).norm(dim=-1))

        return per_face


@register("qmvae")
@dataclass
class QMVAEProtect:
    """QM-VAE (utility-keeping de-identification). Options: ``checkpoint`` (a `veil train qmvae`
    file; default: the shipped model), ``mask_radius``/``feather`` (the pasted ellipse, fractions of
    the crop), ``service_steps`` (code-search steps for the expression service; 0: none)."""

    checkpoint: str | None = None
    mask_radius: float = 0.47
    feather: float = 0.08
    service_steps: int = 8
    model: QMVAE = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from veil.qmvae_train import default_checkpoint, load_checkpoint

        if not 0 < self.mask_radius <= 0.6 or not 0 <= self.feather < self.mask_radius:
            raise ValueError(f"need 0 < mask_radius <= 0.6 and 0 <= feather < mask_radius, "
                             f"got {self.mask_radius}, {self.feather}")
        if not 0 <= int(self.service_steps) == self.service_steps:
            raise ValueError(f"service_steps must be a whole number >= 0, got {self.service_steps}")
        path = Path(self.checkpoint) if self.checkpoint else default_checkpoint()
        self.model = load_checkpoint(path).model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._mask = soft_ellipse(self.model.config.size, self.mask_radius, self.feather)
        self._search = None
        if self.service_steps:
            from veil.models.onnx_runtime import FrozenNet
            from veil.models.qmvae import ExpressionService
            from veil.models.recognizer import FaceRecognizer

            service = ExpressionService(self.model.config.crop)
            frozen = FrozenNet(service.net, "expression", service.own_crop.size)
            self._search = ServiceSearch(service, self._mask, frozen, int(self.service_steps))
            recognizer = FaceRecognizer.pretrained()
            for q in recognizer.parameters():
                q.requires_grad_(False)
            self._guard = IdentityGuard(recognizer, FrozenNet(recognizer, "dlib", recognizer.input_size),
                                        recognizer.threshold + GUARD_MARGIN)

    def __call__(self, frame: np.ndarray, faces: Faces, state: ProtectState) -> np.ndarray:
        if len(faces) == 0:
            return frame.copy()
        spec = self.model.config.crop
        crops = crop_faces(frame, faces.landmarks, spec)
        own = inside = None
        if self._search:
            own_spec = self._search.service.own_crop
            own = crop_faces(frame, faces.landmarks, own_spec)
            inside = _inside_frame(frame, faces.landmarks, own_spec)
        tracks: dict[int, tuple] = state.memory.setdefault("qmvae_tracks", {})
        ids = [int(t) for t in faces.track_ids]
        carried = [tracks.get(t) if t >= 0 else None for t in ids]
        generated, codes = generate(self.model, crops, rng_for(state.seed, state.frame_index), self._search, own,
                                    inside, carried)
        out = paste_faces(frame, generated, faces.landmarks, spec, mask=self._mask)
        if self._search:
            out, codes = self._guard_identity(frame, out, faces, generated, codes, own, inside, state)
        tracks.clear()  # only the previous frame's choices are carried: a face gone for a frame starts afresh
        tracks.update((t, c) for t, c in zip(ids, codes) if t >= 0)
        state.stats.setdefault("qmvae_faces", []).append(len(faces))
        return out

    def _guard_identity(self, frame: np.ndarray, out: np.ndarray, faces: Faces, generated: np.ndarray,
                        codes: list[tuple], own: np.ndarray, inside: np.ndarray,
                        state: ProtectState) -> tuple[np.ndarray, list[tuple]]:
        """Keep the search from drawing the person: search again, or undo it, where it came close.

        The search steers by the service alone; a swap that keeps an expression may also draw
        more of the person. The shown face is compared with the original by dlib's ResNet (the
        recognizer the cloak also uses). Where their distance is under its threshold plus
        ``GUARD_MARGIN``, the codes are searched once more for the service and for distance
        together; a face still that close goes back to the model's own codes (the forward pass).
        """
        import torch

        def searched() -> np.ndarray:
            return np.array([not torch.equal(enc, chosen) for enc, chosen in codes])

        spec = self.model.config.crop
        guard, search = self._guard, self._search
        close = searched()
        if not close.any():  # the model's own codes everywhere: nothing to check
            return out, codes
        rows = np.flatnonzero(close)
        reference = guard.descriptors(frame, faces.landmarks[rows])
        close[rows] = guard.distances(reference, out, faces.landmarks[rows]) < guard.limit
        if close.any():
            reference = reference[close[rows]]
            rows = np.flatnonzero(close)
            service_loss = search.loss(own[rows], inside[rows])
            identity_loss = guard.loss(frame, faces.landmarks[rows], reference, spec, self._mask)

            def both(f: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
                return service_loss(f, i) + IDENTITY_WEIGHT * identity_loss(f, i)

            start = torch.stack([codes[i][1] for i in rows])
            plain = torch.stack([codes[i][0] for i in rows])
            found = search.search(self.model, start, both, plain)
            for i, chosen in zip(rows, found):
                codes[i] = (codes[i][0], chosen)
            generated = generated.copy()
            generated[rows] = _draw(self.model, found)
            out = paste_faces(frame, generated, faces.landmarks, spec, mask=self._mask)
            still = np.zeros_like(close)
            still[rows] = guard.distances(reference, out, faces.landmarks[rows]) < guard.limit
            still &= searched()
            if still.any():
                generated[still] = _draw(self.model, torch.stack([codes[i][0] for i in np.flatnonzero(still)]))
                codes = [(enc, enc) if u else (enc, chosen) for (enc, chosen), u in zip(codes, still)]
                out = paste_faces(frame, generated, faces.landmarks, spec, mask=self._mask)
            state.stats.setdefault("qmvae_search_undone", []).append(int(still.sum()))
        return out, codes
