"""What a protected file leaves behind of its source's metadata, listed for the summary.

A phone, an action camera or a drone writes more than pictures and sound: the place
(``com.apple.quicktime.location.ISO6709``, ``location``/``©xyz``), the device (make, model,
software), dates (in the container and in each stream), chapter titles, subtitles and data streams
(GoPro's ``gpmd`` and drones' KLV telemetry carry GPS). veil writes a new file with the protected
video and the audio only, so everything else is gone; the container's tags are gone too unless
``--keep-metadata``. `video_metadata_dropped` and `photo_metadata_dropped` say what, so that a
user can see it was there and is not in the output.
"""

from __future__ import annotations

import av

__all__ = ["video_metadata_dropped", "photo_metadata_dropped"]

# Tags that describe the file's structure, not the people or the place: not worth listing.
_STRUCTURAL = {"major_brand", "minor_version", "compatible_brands", "handler_name", "vendor_id", "language",
               "duration", "encoder", "DURATION", "ENCODER"}


def _tags(metadata: dict) -> list[str]:
    return sorted(k for k in metadata if k not in _STRUCTURAL)


def video_metadata_dropped(container: av.container.InputContainer, *, keep_metadata: bool,
                           keep_audio: bool) -> list[str]:
    """One line per thing of `container` the output does not carry: its tags (unless kept), each
    stream's tags, each stream veil does not write (subtitle, data, attachment, and audio without
    ``keep_audio``), its chapters."""
    dropped = []
    if not keep_metadata and (tags := _tags(container.metadata)):
        dropped.append("container tags: " + ", ".join(tags))
    for stream in container.streams:
        written = stream.type == "video" and stream is container.streams.video[0] or (
            stream.type == "audio" and keep_audio)
        if not written:
            codec = stream.codec_context.name if stream.codec_context is not None else stream.name  # data: no context
            dropped.append(f"stream {stream.index}: {stream.type} ({codec})")
        elif tags := _tags(stream.metadata):
            dropped.append(f"stream {stream.index} tags: " + ", ".join(tags))
    chapters = container.chapters()
    if chapters:
        titles = [c["metadata"].get("title", "") for c in chapters]
        named = ", ".join(repr(t) for t in titles if t)
        dropped.append(f"chapters: {len(chapters)}" + (f" ({named})" if named else ""))
    return dropped


def photo_metadata_dropped(image, *, keep_metadata: bool) -> list[str]:
    """What of a Pillow `image` (as opened, before anything is taken from it) the written photo
    lacks: XMP, IPTC, comments, embedded thumbnails and the extra pictures of a multi-picture file
    (depth and gain maps), always; the EXIF tags (GPS, device, dates) unless kept, and its maker
    notes always (they can hold a preview of the unprotected picture)."""
    dropped, info = [], image.info
    exif = image.getexif()
    if exif and not keep_metadata:
        names = ["GPS" if 0x8825 in exif else "", "device" if {0x010F, 0x0110, 0x0131} & set(exif) else "",
                 "dates" if 0x0132 in exif or 0x9003 in exif.get_ifd(0x8769) else ""]
        dropped.append("EXIF" + (f" ({', '.join(n for n in names if n)})" if any(names) else ""))
    elif 0x927C in exif.get_ifd(0x8769):
        dropped.append("EXIF maker notes")
    if b"\xff\xd8\xff" in (info.get("exif") or b"")[6:]:  # a JPEG inside the EXIF: IFD1's thumbnail
        dropped.append("embedded thumbnail")
    for key, what in (("xmp", "XMP"), ("XML:com.adobe.xmp", "XMP"), ("photoshop", "IPTC / Photoshop"),
                      ("comment", "comment")):
        if info.get(key) and what not in dropped:
            dropped.append(what)
    if getattr(image, "applist", None) and any(m == "APP13" for m, _ in image.applist) and \
            "IPTC / Photoshop" not in dropped:
        dropped.append("IPTC / Photoshop")
    if getattr(image, "n_frames", 1) > 1:
        dropped.append(f"{image.n_frames - 1} more pictures (multi-picture: depth, gain or preview images)")
    return dropped

