"""Photos: read upright as RGB (and alpha), write atomically in the same kind of file, metadata dropped.

Pillow does the reading and writing (pillow-heif adds the HEIC photos of phones): it knows the
formats, applies the EXIF orientation and keeps the colour profile, which OpenCV's image codecs do
not. What a photo carries besides its pixels is dropped: EXIF (GPS position, camera, dates), XMP,
IPTC, comments, and the thumbnails and depth maps a phone stores beside the picture (they show the
unprotected face). ``keep_metadata`` keeps the EXIF tags, with the orientation reset (the pixels
are upright) and without the maker notes, where cameras keep previews of the picture. The colour
(ICC) profile and the resolution (dpi) are kept: they say how to show the pixels, not where or by
whom they were taken.

Animated images and multi-page TIFFs are refused rather than cut to their first frame (the other
frames would be lost); a camera's multi-picture JPEG (MPO) is its first, main picture.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from veil.errors import InputError, WriteError
from veil.media.metadata import photo_metadata_dropped
from veil.media.outputs import check_output, discard, publish, temporary_beside
from veil.media.sources import MAX_PIXELS, check_pixels

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["PHOTO_SUFFIXES", "Photo", "is_photo", "read_photo", "encode_photo", "write_photo",
           "check_photo_output"]

# Pillow's format for each suffix: what is read, and what is written back.
_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
            ".tif": "TIFF", ".tiff": "TIFF", ".heic": "HEIF", ".heif": "HEIF", ".avif": "AVIF"}
PHOTO_SUFFIXES = frozenset(_FORMATS)
_READ_FORMATS = sorted(set(_FORMATS.values()))  # a multi-picture JPEG opens as "MPO"
_GRAY_MODES = {"1", "L", "LA", "La", "I;16", "I;16B", "I;16L", "I;16N"}


@dataclass(frozen=True)
class _Writer:
    """How veil writes one format: what it can hold, and its encoder settings."""

    alpha: bool  # keeps transparency
    grey_alpha: bool  # keeps grey with transparency (else written as RGBA)
    dpi: bool
    exif: bool
    options: tuple[tuple[str, object], ...] = ()


_WRITERS = {
    "JPEG": _Writer(alpha=False, grey_alpha=False, dpi=True, exif=True, options=(("quality", 95),)),
    "PNG": _Writer(alpha=True, grey_alpha=True, dpi=True, exif=True),
    "WEBP": _Writer(alpha=True, grey_alpha=False, dpi=False, exif=True, options=(("quality", 95),)),
    "BMP": _Writer(alpha=False, grey_alpha=False, dpi=True, exif=False),
    "TIFF": _Writer(alpha=True, grey_alpha=True, dpi=True, exif=False, options=(("compression", "tiff_lzw"),)),
    "HEIF": _Writer(alpha=True, grey_alpha=False, dpi=False, exif=True, options=(("quality", 90),)),
    "AVIF": _Writer(alpha=True, grey_alpha=False, dpi=False, exif=True, options=(("quality", 90),)),
}
_MAKER_NOTE = 0x927C


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
    icc_profile: bytes | None
    dpi: tuple[float, float] | None
    exif: bytes | None  # orientation reset to 1
    jpeg_subsampling: int = -1  # the source's chroma subsampling (JPEG), -1: unknown
    # What of the file's metadata a written photo lacks (`veil.media.metadata`): without
    # keep_metadata, and with it.
    dropped: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

    def metadata_dropped(self, keep_metadata: bool) -> list[str]:
        return list(self.dropped[int(keep_metadata)])

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


def _pillow():
    """Pillow's modules, imported on first use (a video run never needs them), with HEIF registered."""
    from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError
    from pillow_heif import register_heif_opener

    if "HEIF" not in Image.OPEN:
        register_heif_opener()
        Image.MAX_IMAGE_PIXELS = None  # read_photo checks the size itself (--max-pixels)
    Image.init()  # every plugin registered: `formats=` then opens only veil's
    return Image, ImageOps, JpegImagePlugin, UnidentifiedImageError


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
        return rgba[..., :3].copy(), rgba[..., 3].copy(), gray
    return np.array(image.convert("RGB")), None, gray  # a copy: Pillow's array view is read-only


def read_photo(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> Photo:
    """Decode the photo at `path`, turned upright by its EXIF orientation.

    Raises `InputError` for a missing, empty, corrupt, animated or unsupported file, and for one
    larger than `max_pixels` (checked on its header, before anything is decoded; None: no limit).
    Pillow's own decompression-bomb guard gives way to this limit.
    """
    Image, ImageOps, JpegImagePlugin, UnidentifiedImageError = _pillow()
    path = Path(path)
    if not path.exists():
        raise InputError(f"{str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"{str(path)!r} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path, formats=_READ_FORMATS)
        with image:
            check_pixels(str(path), image.width, image.height, max_pixels)
            if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":
                raise InputError(f"{str(path)!r} is an animated or multi-page image; convert it to a "
                                 "video to protect every frame")
            image.load()
            dropped = tuple(tuple(photo_metadata_dropped(image, keep_metadata=k)) for k in (False, True))
            info = dict(image.info)
            if image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                info.pop("icc_profile", None)  # a profile of another colour space than the RGB written
            subsampling = JpegImagePlugin.get_sampling(image) if image.format in ("JPEG", "MPO") else -1
            upright = ImageOps.exif_transpose(image)
            exif = upright.getexif()
            rgb, alpha, gray = _to_array(upright)
    except InputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{str(path)!r} cannot be read as a photo: {exc}") from None
    if 0x0112 in exif:
        exif[0x0112] = 1
    if 0x8769 in exif:
        exif.get_ifd(0x8769).pop(_MAKER_NOTE, None)  # tobytes() below writes the edited Exif IFD
    dpi = info.get("dpi")
    return Photo(rgb, alpha, gray, info.get("icc_profile"),
                 tuple(float(d) for d in dpi) if dpi else None, exif.tobytes() if len(exif) else None,
                 subsampling, dropped)


def check_photo_output(src: Path, dst: Path) -> None:
    """Refuse an output that is the input itself, not a photo file, or cannot be written."""
    check_output(src, dst, _FORMATS, "photo", ", ".join(sorted(_FORMATS)))


def encode_photo(photo: Photo, rgb: np.ndarray, suffix: str, *, keep_metadata: bool = False) -> bytes:
    """`rgb` (the protected pixels of `photo`) as the bytes of a `suffix` file."""
    Image = _pillow()[0]
    fmt = _FORMATS[suffix.lower()]
    writer = _WRITERS[fmt]
    image = Image.fromarray(rgb)
    params: dict = dict(writer.options)
    if photo.icc_profile and fmt != "BMP":
        params["icc_profile"] = photo.icc_profile
    if photo.gray:
        image = image.convert("L")
    if photo.alpha is not None and writer.alpha:
        if photo.gray and not writer.grey_alpha:
            image = image.convert("RGB")
            params.pop("icc_profile", None)  # a grey profile does not describe RGB pixels
        image.putalpha(Image.fromarray(photo.alpha))
    if photo.dpi and writer.dpi:
        params["dpi"] = photo.dpi
    if keep_metadata and photo.exif and writer.exif:
        params["exif"] = photo.exif
    if fmt == "JPEG" and photo.jpeg_subsampling >= 0:
        params["subsampling"] = photo.jpeg_subsampling
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def write_photo(dst: str | os.PathLike, photo: Photo, rgb: np.ndarray, *, keep_metadata: bool = False) -> Path:
    """Write `rgb` as the photo `dst` (format from its extension): a temporary file beside it, renamed
    only when complete."""
    dst = Path(dst)
    data = encode_photo(photo, rgb, dst.suffix, keep_metadata=keep_metadata)
    tmp = temporary_beside(dst)
    try:
        tmp.write_bytes(data)
        publish(tmp, dst)
    except OSError as exc:  # a full disk, a file-size limit, an I/O error
        discard(tmp)
        raise WriteError(f"cannot write {str(dst)!r}: {exc.strerror or exc}; nothing was written there") from None
    except BaseException:
        discard(tmp)
        raise
    return dst
