"""The exceptions veil raises. The CLI catches them once and prints one line.

`InputError` (and subclasses) means the user's input or options are wrong: exit code 2.
`VeilError` otherwise means veil could not do the job: exit code 1.
"""

from __future__ import annotations

__all__ = ["VeilError", "InputError", "VideoOpenError", "OutputError", "WriteError", "DetectionError", "ProtectionError"]


class VeilError(Exception):
    """A failure with a message a user can act on."""

    exit_code = 1


class InputError(VeilError):
    """Bad input: a missing, empty, corrupt or unsupported file, or a bad option."""

    exit_code = 2


class VideoOpenError(InputError):
    """A file that cannot be read as a video."""


class OutputError(InputError):
    """An output that cannot be written (same path as the input, folder not writable, ...)."""


class WriteError(VeilError):
    """An output that could not be completed: the disk is full, the file too large, an I/O error.

    The half-written file is removed; the input is untouched."""


class DetectionError(VeilError):
    """The face detector failed on a frame."""


class ProtectionError(VeilError):
    """The protection method failed on a frame (with ``--on-error stop``; otherwise the frame is
    written fully masked)."""
