"""Protections: one registry, one call shape `(frame, faces, state) -> frame`.

`base` holds the protocol, the registry and the masks; `classic` the classic methods (blur,
mosaic, solid, blindfold, noise, cartoon, sticker). The learned methods live in their systems'
packages and are registered here by name only (`register_lazy`): `veil.cloak` and `veil.qmvae`
import this package, never the other way round, and load only when their method is used.

May import: `veil.faces`, `veil.align`, `veil.errors`. Part of the core: works on arrays, imports
no media code.
"""

from veil.protect import classic  # noqa: F401  (registers the classic protections)
from veil.protect.base import (
    Protector,
    ProtectState,
    face_mask,
    get_protector,
    mask_everything,
    protector_names,
    protector_options,
    register,
    register_lazy,
)

register_lazy("cloak", "veil.cloak.protector")
register_lazy("qmvae", "veil.qmvae.protector")

__all__ = ["ProtectState", "Protector", "face_mask", "get_protector", "mask_everything",
           "protector_names", "protector_options", "register"]
