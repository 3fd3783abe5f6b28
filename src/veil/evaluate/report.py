"""The HTML report of ``veil evaluate``: one self-contained file (images inlined as base64).

It shows the summary table, the per-track table, side-by-side thumbnails (original | protected)
of the frames with the worst privacy and the worst utility, and plots over time (matplotlib):
descriptor distance per recognizer with its threshold, SSIM, PSNR and flicker.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import cv2
import numpy as np

from veil.evaluate.run import WorstFrames

__all__ = ["render_html", "write_html"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; font-size: 14px; }
th { background: #f3f3f3; }
figure { display: inline-block; margin: 0.5em; }
figcaption { font-size: 13px; color: #555; }
img { max-width: 100%; }
"""


def _png(fig: object) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")  # type: ignore[attr-defined]
    return base64.b64encode(buf.getvalue()).decode()


def _jpeg(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return base64.b64encode(data.tobytes()).decode() if ok else ""


def _fmt(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


def _table(rows: list[tuple[str, object]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _plots(report: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = report["frames"]
    t = [f["index"] for f in frames]
    out = []
    fig, ax = plt.subplots(figsize=(9, 3))
    for name, threshold in report.get("thresholds", {}).items():
        dist = [min((x["descriptor_distance"][name] for x in f["faces"]), default=np.nan) for f in frames]
        line = ax.plot(t, dist, label=f"{name} (closest face)")[0]
        ax.axhline(threshold, color=line.get_color(), linestyle="--", linewidth=1, label=f"{name} threshold")
    ax.set_xlabel("frame")
    ax.set_ylabel("descriptor distance")
    ax.legend(fontsize=8)
    out.append(("Descriptor distance to the original face (below the threshold: re-identified)", _png(fig)))
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3))
    axes[0].plot(t, [f["ssim"] for f in frames], label="SSIM")
    axes[0].plot(t, [f["ssim_outside_faces"] for f in frames], label="SSIM outside faces")
    axes[0].set_ylim(min(0.0, *[f["ssim"] for f in frames]), 1.02)
    axes[1].plot(t, [f["psnr"] for f in frames], label="PSNR")
    axes[1].plot(t, [f["psnr_outside_faces"] for f in frames], label="PSNR outside faces")
    for ax, label in zip(axes, ("SSIM", "PSNR (dB)")):
        ax.set_xlabel("frame")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    out.append(("Image quality over time", _png(fig)))
    plt.close(fig)
    flicker = [max((x["flicker"] for x in f["faces"] if x["flicker"] is not None), default=np.nan) for f in frames]
    if np.isfinite(flicker).any():
        fig, ax = plt.subplots(figsize=(9, 3))
        ax.plot(t, flicker)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("frame")
        ax.set_ylabel("flicker (protected / original change)")
        out.append(("Temporal flicker inside the faces (1 = as steady as the original)", _png(fig)))
        plt.close(fig)
    return out


def render_html(report: dict, worst: WorstFrames | None = None) -> str:
    """The report as one HTML document."""
    s = report["summary"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>veil evaluate</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>veil evaluate</h1>",
             f"<p>original: <code>{html.escape(report['original'])}</code><br>"
             f"protected: <code>{html.escape(report['protected'])}</code></p>",
             "<h2>Summary</h2>", _table(list(s.items()))]
    if "attack" in report:
        parts += ["<h2>Attack (attacker trains on protected faces, tested on clean ones)</h2>",
                  _table([(name, {"protection_success": a["protection_success"], "test_clean_faces":
                                  a["test_clean_faces"], "classifier": a["classifier"]})
                          for name, a in report["attack"].items()])]
    if report["tracks"]:
        keys = [k for k in report["tracks"][0] if k != "track_id"]
        head = "".join(f"<th>{html.escape(k)}</th>" for k in ["track", *keys])
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(tr[k]))}</td>" for k in ["track_id", *keys]) + "</tr>"
                       for tr in report["tracks"])
        parts += ["<h2>Tracks</h2>", f"<table><tr>{head}</tr>{rows}</table>"]
    if worst is not None:
        for title, board, what in (("Worst privacy", worst.privacy, "closest to re-identification"),
                                   ("Worst utility", worst.utility, "1 - SSIM")):
            parts.append(f"<h2>{title} (original | protected)</h2>")
            for score, index, thumb in board:
                parts.append(f"<figure><img alt='frame {index}' src='data:image/jpeg;base64,{_jpeg(thumb)}'>"
                             f"<figcaption>frame {index}, {what}: {score:.3f}</figcaption></figure>")
    parts.append("<h2>Over time</h2>")
    for caption, png in _plots(report):
        parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{png}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(path: str | Path, report: dict, worst: WorstFrames | None = None) -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8)."""
    path = Path(path)
    path.write_text(render_html(report, worst), encoding="utf-8")
    return path
