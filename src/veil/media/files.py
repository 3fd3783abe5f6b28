"""Which files are media: videos and photos by their extension, and the media files of a folder.

Every command that takes a folder (``veil protect``, ``veil evaluate``, the trainers, the cloak's
``--targets``) finds its files here, so they all agree on what a video and a photo are.
"""

from __future__ import annotations

import os
from pathlib import Path

from veil.media.photo import PHOTO_SUFFIXES, is_photo
from veil.media.read import VIDEO_SUFFIXES

__all__ = ["VIDEO_SUFFIXES", "PHOTO_SUFFIXES", "is_video", "is_photo", "is_media", "media_files", "describe_kinds"]


def is_video(path: str | os.PathLike) -> bool:
    """Whether veil treats `path` as a video (by its extension)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_media(path: str | os.PathLike, *, videos: bool = True, photos: bool = True) -> bool:
    """A video or a photo (of the kinds asked for) that is not hidden (hidden files are other
    tools' temporaries, and veil's own half-written outputs)."""
    path = Path(path)
    return not path.name.startswith(".") and ((videos and is_video(path)) or (photos and is_photo(path)))


def describe_kinds(*, videos: bool = True, photos: bool = True) -> str:
    """The extensions of the kinds asked for, for a message: ".avi, .bmp, ..."."""
    suffixes = (VIDEO_SUFFIXES if videos else frozenset()) | (PHOTO_SUFFIXES if photos else frozenset())
    return ", ".join(sorted(suffixes))


def media_files(folder: str | os.PathLike, *, videos: bool = True, photos: bool = True,
                recursive: bool = False) -> list[Path]:
    """The videos and/or photos in `folder` (and its sub-folders with `recursive`), sorted by path."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and is_media(p, videos=videos, photos=photos))
