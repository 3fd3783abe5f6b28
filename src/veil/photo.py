"""Photos: read upright as RGB (and alpha), write atomically in the same kind of file, metadata dropped.

Pillow does the reading and writing: it knows the formats, applies the EXIF orientation and keeps
the colour profile, which OpenCV's image codecs do not. What a photo carries besides its pixels is
dropped: EXIF (GPS position, camera, dates), XMP, IPTC and comments; ``keep_metadata`` keeps the
EXIF (its orientation reset, the pixels being upright). The colour (ICC) profile and the resolution
(dpi) are kept: they say how to show the pixels, not where or by whom they were taken.

Animated images and multi-page TIFFs are refused rather than cut to their first frame (the other
frames would be lost); a camera's multi-picture JPEG (MPO) is its first, main picture.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from veil.errors import InputError, OutputError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["PHOTO_SUFFIXES", "Photo", "is_photo", "read_photo", "write_photo", "check_photo_output"]

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

# Pillow's format for each output suffix (only these are written).
_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
            ".tif": "TIFF", ".tiff": "TIFF"}
_READ_FORMATS = ["JPEG", "PNG", "WEBP", "BMP", "TIFF"]  # a multi-picture JPEG opens as "MPO"
_GRAY_MODES = {"1", "L", "LA", "La", "I;16", "I;16B", "I;16L", "I;16N"}
JPEG_QUALITY = 95


@dataclass
class Photo:
    """One photo, upright.

    Shape:
        - rgb: (H, W, 3) uint8 RGB (16-bit sources scaled to 8 bits, grey repeated in 3 channels)
        - alpha: (H, W) uint8, or None when the photo has no transparency
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    gray: bool  # written back as a grey image
    format: str  # Pillow's name of the source format
    icc_profile: bytes | None
    dpi: tuple[float, float] | None
    exif: bytes | None  # orientation reset to 1
    jpeg_subsampling: int = -1  # the source's chroma subsampling (JPEG), -1: unknown

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


def is_photo(path: str | os.PathLike) -> bool:
    """Whether veil treats `path` as a photo (by its extension)."""
    return Path(path).suffix.lower() in PHOTO_SUFFIXES


def _to_array(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(rgb, alpha, gray) of a decoded image in any of Pillow's common modes."""
    mode = image.mode
    gray = mode in _GRAY_MODES
    if mode.startswith("I;16"):
        # Pillow's own conversion to "L" clips at 255 instead of scaling 16 bits down to 8.
        values = np.asarray(image).astype(np.uint32) >> 8
        return np.repeat(values.astype(np.uint8)[..., None], 3, axis=2), None, True
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"))
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3]), gray
    return np.asarray(image.convert("RGB")), None, gray


def read_photo(path: str | os.PathLike) -> Photo:
    """Decode the photo at `path`, turned upright by its EXIF orientation.

    Raises `InputError` for a missing, empty, corrupt, animated or unsupported file.
    """
    from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError  # on use: video runs skip it

    path = Path(path)
    if not path.exists():
        raise InputError(f"{str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"{str(path)!r} is empty")
    Image.init()  # registers every plugin; `formats=` below then opens only these
    try:
        with Image.open(path, formats=_READ_FORMATS) as image:
            if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":
                raise InputError(f"{str(path)!r} is an animated or multi-page image; convert it to a "
                                 "video to protect every frame")
            image.load()
            info, source_format = dict(image.info), image.format
            if image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                info.pop("icc_profile", None)  # a profile of another colour space than the RGB written
            subsampling = -1
            if source_format in ("JPEG", "MPO"):
                subsampling = JpegImagePlugin.get_sampling(image)
            upright = ImageOps.exif_transpose(image)
            exif = upright.getexif()
            rgb, alpha, gray = _to_array(upright)
    except InputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{str(path)!r} cannot be read as a photo: {exc}") from None
    if 0x0112 in exif:
        exif[0x0112] = 1
    dpi = info.get("dpi")
    return Photo(rgb, alpha, gray, source_format, info.get("icc_profile"),
                 tuple(float(d) for d in dpi) if dpi else None, exif.tobytes() if len(exif) else None,
                 subsampling)


def check_photo_output(src: Path, dst: Path) -> None:
    """Refuse an output that is the input itself, cannot be written, or is not a photo file."""
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise OutputError(f"output {str(dst)!r} is the input itself; veil never overwrites its input")
    if dst.is_dir():
        raise OutputError(f"output {str(dst)!r} is a folder; give a file name")
    if dst.suffix.lower() not in _FORMATS:
        raise OutputError(f"output {str(dst)!r} of a photo needs a photo file extension "
                          f"({', '.join(sorted(_FORMATS))})")
    parent = dst.parent if str(dst.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {str(parent)!r}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"the output folder {str(parent)!r} is not writable")


def encode_photo(photo: Photo, rgb: np.ndarray, suffix: str, *, keep_metadata: bool = False) -> bytes:
    """`rgb` (the protected pixels of `photo`) as the bytes of a `suffix` file."""
    from PIL import Image

    fmt = _FORMATS[suffix.lower()]
    if photo.gray:
        image = Image.fromarray(np.asarray(Image.fromarray(rgb).convert("L")))
        if photo.alpha is not None and fmt in ("PNG", "WEBP", "TIFF"):
            image = Image.merge("LA", (image, Image.fromarray(photo.alpha)))
    else:
        image = Image.fromarray(rgb)
        if photo.alpha is not None and fmt in ("PNG", "WEBP", "TIFF"):
            image = Image.merge("RGBA", (*image.split(), Image.fromarray(photo.alpha)))
    params: dict = {}
    if photo.icc_profile and fmt != "BMP":
        params["icc_profile"] = photo.icc_profile
    if fmt == "WEBP" and image.mode == "LA":
        image = image.convert("RGBA")
        params.pop("icc_profile", None)  # a grey profile does not describe RGB pixels
    if photo.dpi and fmt in ("JPEG", "PNG", "TIFF", "BMP"):
        params["dpi"] = photo.dpi
    if keep_metadata and photo.exif and fmt in ("JPEG", "PNG", "WEBP"):
        params["exif"] = photo.exif
    if fmt == "JPEG":
        params["quality"] = JPEG_QUALITY
        if photo.jpeg_subsampling >= 0:
            params["subsampling"] = photo.jpeg_subsampling
    elif fmt == "WEBP":
        params["quality"] = JPEG_QUALITY
    elif fmt == "TIFF":
        params["compression"] = "tiff_lzw"
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def write_photo(dst: str | os.PathLike, photo: Photo, rgb: np.ndarray, *, keep_metadata: bool = False) -> Path:
    """Write `rgb` as the photo `dst` (format from its extension): a temporary file beside it, renamed
    only when complete."""
    dst = Path(dst)
    data = encode_photo(photo, rgb, dst.suffix, keep_metadata=keep_metadata)
    try:
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.stem}.", suffix=dst.suffix)
    except OSError as exc:
        raise OutputError(f"cannot write in {str(dst.parent)!r}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst
