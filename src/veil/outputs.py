"""The checks every output path gets before anything is written (videos and photos alike)."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from veil.errors import OutputError

__all__ = ["check_output"]


def check_output(src: Path, dst: Path, suffixes: Collection[str], kind: str, examples: str) -> None:
    """Refuse an output that is the input itself, a folder, not a `kind` file (by its extension),
    or in a folder that cannot be created or written. `examples`: extensions to suggest."""
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise OutputError(f"output {str(dst)!r} is the input itself; veil never overwrites its input")
    if dst.is_dir():
        raise OutputError(f"output {str(dst)!r} is a folder; give a file name")
    if dst.suffix.lower() not in suffixes:
        raise OutputError(f"output {str(dst)!r} has no {kind} file extension (use {examples})")
    parent = dst.parent if str(dst.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {str(parent)!r}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"the output folder {str(parent)!r} is not writable")
