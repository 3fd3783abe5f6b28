"""Protections: one registry, one call shape `(frame, faces, state) -> frame`."""

from veil.protect import classic  # noqa: F401  (registers the classic protections)
from veil.protect.base import (
    ProtectState,
    Protector,
    face_mask,
    get_protector,
    mask_everything,
    protector_names,
    protector_options,
    register,
    register_lazy,
)

register_lazy("cloak", "veil.protect.cloak")
register_lazy("qmvae", "veil.protect.qmvae")

__all__ = ["ProtectState", "Protector", "face_mask", "get_protector", "mask_everything",
           "protector_names", "protector_options", "register"]
