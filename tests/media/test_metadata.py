"""Metadata as phones, action cameras and drones write it: the place, the device, the dates,
chapter titles, subtitle and telemetry streams; photos' XMP, IPTC, thumbnails and extra pictures.
All gone from the output by default (judged by reading the output's bytes and tags), and listed in
the summary as dropped."""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

import veil
from veil.media.read import read_frames

PLACE = "+48.8583+002.2945+035.000/"
SECRETS = [b"48.8583", b"iPhone 15", b"Kitchen", b"Alice", b"2026-01-02"]


def _phone_video(path, frames, *, fmt_options=None, tags=None, data=None, chapters=True):
    """A video as a device writes it: `tags` on the container, a creation date on the stream,
    a chapter titled "Kitchen", and a `data` stream (telemetry: KLV, as drones send GPS)."""
    with av.open(str(path), "w", container_options=fmt_options or {}) as out:
        out.metadata.update(tags or {})
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        video.metadata["creation_time"] = "2026-01-02T03:04:05.000000Z"
        telemetry = out.add_data_stream(data) if data else None
        if chapters:
            out.set_chapters([{"id": 1, "start": 0, "end": 15, "time_base": Fraction(1, 30),
                               "metadata": {"title": "Kitchen"}}])
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
            if telemetry is not None:
                packet = av.Packet(b"\x06\x0e\x2b\x34GPS 48.8583 2.2945 Alice")
                packet.stream, packet.pts, packet.dts, packet.time_base = telemetry, i * 33, i * 33, Fraction(1, 1000)
                out.mux(packet)
        out.mux(video.encode(None))
    return path


@pytest.fixture(scope="module")
def frames(media):
    return [f for _, f in zip(range(12), read_frames(media("single_face.mp4")))]


def _everything_in(path) -> tuple[dict, list, list, bytes]:
    with av.open(str(path)) as c:
        tags = dict(c.metadata)
        for s in c.streams:
            tags.update({f"{s.index}:{k}": v for k, v in s.metadata.items()})
        return tags, [s.type for s in c.streams], c.chapters(), path.read_bytes()


@pytest.mark.parametrize("kind", ["iphone.mov", "drone.ts"])
def test_place_device_dates_chapters_and_telemetry_are_gone_and_listed(frames, tmp_path, kind):
    if kind == "iphone.mov":
        tags = {"com.apple.quicktime.location.ISO6709": PLACE, "location": PLACE, "title": "Alice at home",
                "com.apple.quicktime.make": "Apple", "com.apple.quicktime.model": "iPhone 15",
                "com.apple.quicktime.software": "17.1", "creation_time": "2026-01-02T03:04:05.000000Z"}
        src = _phone_video(tmp_path / kind, frames, fmt_options={"movflags": "use_metadata_tags"}, tags=tags)
    else:
        src = _phone_video(tmp_path / kind, frames, tags={"service_name": "Alice's drone"}, data="klv",
                           chapters=False)
    before, types, chapters, raw = _everything_in(src)
    assert len(types) == 2 and any(s in raw for s in SECRETS)  # the test file really carries them
    out = tmp_path / ("out" + src.suffix)
    summary = veil.protect(src, out)
    after, types, chapters, raw = _everything_in(out)
    assert types == ["video"] and chapters == []
    assert not any(s in raw for s in SECRETS), [s for s in SECRETS if s in raw]
    assert not {"location", "title", "creation_time", "com.apple.quicktime.model"} & set(after)
    listed = "\n".join(summary.metadata_dropped)
    if kind == "iphone.mov":
        assert "com.apple.quicktime.location.ISO6709" in listed and "com.apple.quicktime.model" in listed
        assert "stream 0 tags: creation_time" in listed and "chapters: 1 ('Kitchen')" in listed
    else:
        assert "stream 1: data (klv)" in listed


def test_keep_metadata_keeps_the_tags_but_never_the_other_streams(frames, tmp_path):
    src = _phone_video(tmp_path / "drone.ts", frames, tags={"service_name": "Alice's drone"}, data="klv",
                       chapters=False)
    summary = veil.protect(src, tmp_path / "out.ts", keep_metadata=True)
    _, types, _, raw = _everything_in(tmp_path / "out.ts")
    assert types == ["video"] and b"GPS 48.8583" not in raw
    assert summary.metadata_dropped == ["stream 1: data (klv)"]


# --- photos --------------------------------------------------------------------------------------

XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.48N" '
       b'xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="Alice"/></rdf:RDF></x:xmpmeta>')


def _iptc_segment() -> bytes:
    """An APP13 Photoshop segment with an IPTC by-line (2:80) and city (2:90), as newsroom tools write."""
    records = b"".join(b"\x1c\x02" + bytes([tag]) + struct.pack(">H", len(v)) + v
                       for tag, v in ((80, b"Alice Photographer"), (90, b"Paris")))
    block = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(records)) + records
    body = b"Photoshop 3.0\x00" + block
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


def _phone_photo(load_rgb, path):
    """A real photo as a phone writes it: EXIF with GPS, device and date and a thumbnail, XMP,
    IPTC, and a second picture (a depth map) in a multi-picture file."""
    rgb = load_rgb("obama.jpg")
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "Apple", "iPhone 15", "2026:01:02 03:04:05"
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    thumb = io.BytesIO()
    Image.fromarray(rgb).resize((160, 120)).save(thumb, "JPEG")
    exif_bytes = exif.tobytes()
    exif_bytes += b"THUMB" + thumb.getvalue()  # IFD1's thumbnail bytes, as cameras append them
    depth = Image.fromarray(np.full((rgb.shape[0] // 4, rgb.shape[1] // 4), 128, np.uint8)).convert("RGB")
    Image.fromarray(rgb).save(path, "MPO", save_all=True, append_images=[depth], exif=exif_bytes, xmp=XMP)
    data = path.read_bytes()
    path.write_bytes(data[:2] + _iptc_segment() + data[2:])  # APP13 right after SOI
    return rgb


def test_a_phone_photos_xmp_iptc_thumbnail_and_depth_map_are_gone_and_listed(load_rgb, tmp_path):
    src = tmp_path / "phone.jpg"
    _phone_photo(load_rgb, src)
    raw = src.read_bytes()
    assert all(s in raw for s in (b"Alice Photographer", b"dc:creator", b"iPhone 15", b"THUMB"))
    with Image.open(src) as image:
        assert image.n_frames == 2
    summary = veil.protect(src, tmp_path / "out.jpg")
    out = (tmp_path / "out.jpg").read_bytes()
    for secret in (b"Alice", b"Paris", b"48,51", b"iPhone", b"Apple", b"2026:01:02", b"MPF", b"Photoshop", b"xmpmeta"):
        assert secret not in out, secret
    assert out.count(b"\xff\xd8") == 1  # one picture: no thumbnail, no second picture
    with Image.open(tmp_path / "out.jpg") as image:
        assert getattr(image, "n_frames", 1) == 1 and not image.getexif()
    listed = "\n".join(summary.metadata_dropped)
    for what in ("EXIF (GPS, device, dates)", "embedded thumbnail", "XMP", "IPTC", "1 more pictures"):
        assert what in listed, (what, listed)


def test_a_subtitle_track_is_gone_and_listed(frames, tmp_path):
    """Subtitles can name and place people ("Alice, 12 Main St"): never written to the output."""
    srt = tmp_path / "names.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,400\nAlice Example, 12 Main St\n\n")
    src = tmp_path / "talk.mkv"
    with av.open(str(srt)) as subs, av.open(str(src), "w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        text = out.add_stream_from_template(subs.streams[0])
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
            for packet in subs.demux(subs.streams[0]) if i == 0 else ():
                if packet.size:
                    packet.stream = text
                    out.mux(packet)
        out.mux(video.encode(None))
    assert b"12 Main St" in src.read_bytes()
    summary = veil.protect(src, tmp_path / "out.mkv")
    _, types, _, raw = _everything_in(tmp_path / "out.mkv")
    assert types == ["video"] and b"Main St" not in raw and b"Alice" not in raw
    assert "stream 1: subtitle (srt)" in summary.metadata_dropped
