"""Protections: one registry, one call shape `(frame, faces, state) -> frame`."""

from veil.protect import classic  # noqa: F401  (registers the classic protections)
from veil.protect import cloak  # noqa: F401  (registers the cloak)
from veil.protect import qmvae  # noqa: F401  (registers --method qmvae; the model loads on use)
from veil.protect.base import (
    ProtectState,
    Protector,
    face_mask,
    get_protector,
    mask_everything,
    protector_names,
    protector_options,
    register,
)

__all__ = ["ProtectState", "Protector", "face_mask", "get_protector", "mask_everything",
           "protector_names", "protector_options", "register"]
