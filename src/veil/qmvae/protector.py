"""``--method qmvae``: every face replaced by QM-VAE's fusion of its de-identifications.

Per face per frame: align to the model's crop, de-identify it the model's ways (its checkpoint
names them), run the model, paste the generated crop back under a feathered ellipse. The original
face only ever reaches the model through those de-identified versions.

Service search (``service_steps``, default 8; 0 is the paper's plain forward pass): the service's
answer on the original face (the ensemble of veil's three expression classifiers that the model
is trained for, :mod:`veil.qmvae.service`; the ``service`` option picks some of them) is known at
protection time, so the model's code map is then searched for it
(:func:`veil.qmvae.model.search_codes`): a few of the codes the encoder chose are swapped for
other entries of the codebook where that brings the service's output on the shown face (the
generated face under the mask, the frame around it) closer to its output on the original. The
face is still drawn by the model's decoder from its codebook, so the search chooses among faces
the model can draw; it never copies pixels of the original. Only the classifiers' 7 probabilities
of the original steer it. In a video, each tracked face starts from its swaps of the previous
frame. Privacy is checked, not assumed: :class:`IdentityGuard` measures every shown face against
its original with dlib's ResNet, searches again with the distance in the loss where it came
close, and where that fails keeps the farther of that search's face and the model's own.
bench/qmvae_table.py measures what is kept by each classifier, with and without it in the
search, and the re-identification rate; bench/qmvae_speed.py what the search costs on a video.

The model is loaded when the protection is built, so a missing or broken checkpoint stops the run
before any frame is written. With no ``checkpoint`` option the shipped model
(``src/veil/qmvae/weights/qmvae.pt``, made by ``veil train qmvae --default``) is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from veil.align import crop_faces, paste_faces
from veil.faces import Faces
from veil.protect.base import ProtectState, register, rng_for
from veil.qmvae.checkpoint import default_checkpoint, load_checkpoint
from veil.qmvae.paste import draw, inside_frame, soft_ellipse
from veil.qmvae.search import IdentityGuard, ServiceSearch, face_rolls, generate, with_identity

if TYPE_CHECKING:  # the model (torch, vector-quantize-pytorch) loads only when the method is used
    from veil.qmvae.model import QMVAE

__all__ = ["QMVAEProtect", "GUARD_MARGIN", "IDENTITY_WEIGHT"]

GUARD_MARGIN = 0.05
"""The searched face must stay this much beyond dlib's match distance (0.6) from the original."""
IDENTITY_WEIGHT = 10.0
"""Weight of the distance shortfall (in descriptor units) against the service's KL when the guard
searches again: privacy first."""


@register("qmvae")
@dataclass
class QMVAEProtect:
    """QM-VAE (utility-keeping de-identification). Options: ``checkpoint`` (a `veil train qmvae`
    file; default: the shipped model), ``mask_radius``/``feather`` (the pasted ellipse, fractions of
    the crop), ``service_steps`` (code-search steps for the expression service; 0: none, the
    paper's forward pass, with no identity guard either: it re-identifies more faces, see the
    README), ``service`` (the expression classifiers the search keeps the answer of,
    comma-separated: any of faceapi, human, fer; default all three, the service the shipped model
    was trained for: leave one out to judge with it, or keep face-api's alone for speed)."""

    checkpoint: str | None = None
    mask_radius: float = 0.47
    feather: float = 0.08
    service_steps: int = 8
    service: str = "faceapi,human,fer"  # of veil.qmvae.service.MEMBERS (a module that loads torch: not imported here)
    model: QMVAE = field(init=False, repr=False)
    faces_only = True  # the model draws aligned faces

    def __post_init__(self) -> None:
        if not 0 < self.mask_radius <= 0.6 or not 0 <= self.feather < self.mask_radius:
            raise ValueError(f"need 0 < mask_radius <= 0.6 and 0 <= feather < mask_radius, "
                             f"got {self.mask_radius}, {self.feather}")
        if not 0 <= int(self.service_steps) == self.service_steps:
            raise ValueError(f"service_steps must be a whole number >= 0, got {self.service_steps}")
        from veil.qmvae.service import parse_members

        members = parse_members(self.service)
        path = Path(self.checkpoint) if self.checkpoint else default_checkpoint()
        self.model = load_checkpoint(path).model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._mask = soft_ellipse(self.model.config.size, self.mask_radius, self.feather)
        self._search = None
        if self.service_steps:
            from veil.models.identity import get_recognizer
            from veil.models.onnx_runtime import FrozenNet
            from veil.qmvae.service import ExpressionEnsemble

            service = ExpressionEnsemble(self.model.config.crop, members)
            frozen = FrozenNet(service.module, service.name, service.own_crop.size)
            self._search = ServiceSearch(service, self._mask, frozen, int(self.service_steps))
            recognizer = get_recognizer("dlib")
            self._guard = IdentityGuard(recognizer, recognizer.threshold + GUARD_MARGIN)

    def __call__(self, frame: np.ndarray, faces: Faces, state: ProtectState) -> np.ndarray:
        if len(faces) == 0:
            return frame.copy()
        spec = self.model.config.crop
        crops = crop_faces(frame, faces.landmarks, spec)
        own = inside = None
        if self._search:
            own_spec = self._search.service.own_crop
            own = crop_faces(frame, faces.landmarks, own_spec)
            inside = inside_frame(frame, faces.landmarks, own_spec)
        tracks: dict[int, tuple] = state.memory.setdefault("qmvae_tracks", {})
        ids = [int(t) for t in faces.track_ids]
        carried = [tracks.get(t) if t >= 0 else None for t in ids]
        generated, codes = generate(self.model, crops, rng_for(state.seed, state.frame_index), self._search, own,
                                    inside, carried, face_rolls(faces.landmarks))
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
        """Keep the model and the search from drawing the person: search again where a face came close.

        The search steers by the service alone; a swap that keeps an expression may also draw
        more of the person, and the model's own codes may draw them too. Every shown face is
        compared with its original by dlib's ResNet (the recognizer the cloak also uses). Where
        their distance is under its threshold plus ``GUARD_MARGIN``, the codes are searched once
        more for the service and for distance together; a face still that close is drawn from
        whichever of that search's codes and the model's own lies farther from the original.
        """
        import torch

        spec, guard, search = self.model.config.crop, self._guard, self._search
        reference = guard.descriptors(frame, faces.landmarks)
        close = guard.distances(reference, out, faces.landmarks) < guard.limit
        if not close.any():
            return out, codes
        rows = np.flatnonzero(close)
        identity_loss = guard.loss(frame, faces.landmarks[rows], reference[rows], spec, self._mask)
        both = with_identity(search.loss(own[rows], inside[rows], face_rolls(faces.landmarks[rows])), identity_loss,
                             IDENTITY_WEIGHT)
        start = torch.stack([codes[i][1] for i in rows])
        plain = torch.stack([codes[i][0] for i in rows])
        found = search.search(self.model, start, both, plain, steps=guard.steps)
        for i, chosen in zip(rows, found):
            codes[i] = (codes[i][0], chosen)
        generated = generated.copy()
        generated[rows] = draw(self.model, found)
        out = paste_faces(frame, generated, faces.landmarks, spec, mask=self._mask)
        distance = guard.distances(reference[rows], out, faces.landmarks[rows])
        still = (distance < guard.limit) & np.array([not torch.equal(*codes[i]) for i in rows])
        undone = 0
        if still.any():
            idx = rows[still]
            alternative = generated.copy()
            alternative[idx] = draw(self.model, torch.stack([codes[i][0] for i in idx]))
            shown = paste_faces(frame, alternative, faces.landmarks, spec, mask=self._mask)
            farther = guard.distances(reference[idx], shown, faces.landmarks[idx]) > distance[still]
            if farther.any():
                back = idx[farther]
                generated[back] = alternative[back]
                for i in back:
                    codes[i] = (codes[i][0], codes[i][0])
                out = paste_faces(frame, generated, faces.landmarks, spec, mask=self._mask)
                undone = len(back)
        state.stats.setdefault("qmvae_search_undone", []).append(undone)
        return out, codes
