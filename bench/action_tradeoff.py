"""Action accuracy against privacy: raw video, blur, downsampling and STPrivacy at several keep ratios.

Run (about 10-15 min on 2 cores):

    .venv/bin/python bench/action_tradeoff.py                  # synthetic benchmark
    .venv/bin/python bench/action_tradeoff.py --hmdb51 PATH    # also the real data set, if you have it

Every method is measured in this one run, on the same clips:
- action top-1 of an action model trained on what the method outputs (for raw / blur / downsampling,
  the plain video transformer; for STPrivacy, its own head);
- privacy of a *fresh* attacker trained after the fact on the training split of what the method
  outputs (3D CNN on videos; for STPrivacy also a token classifier on the anonymized tokens, and the
  higher cMAP of the two is reported). Chance is the attribute base rate.
Two more STPrivacy rows check the mechanism rather than compete: the same model at deployment strength
0 (sparsified but not anonymized, which should leak), and a model trained the same way without the
anonymizer's noisy bottleneck (the adversary alone).
Writes bench/results/action_tradeoff.md and .png.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from veil.action.attack import VideoAttacker, fit_attacker, predict_probs
from veil.action.config import preset
from veil.action.data import synthetic_batches
from veil.action.evaluate import collect, evaluate
from veil.action.metrics import attribute_scores, chance_scores, top1
from veil.action.model import STPrivacy
from veil.action.synthetic import ACTIONS, ATTRIBUTES, SyntheticSet, make_synthetic
from veil.action.train import TrainConfig, init_from, train

RESULTS = Path(__file__).parent / "results"


@dataclass
class Row:
    method: str
    action: float
    cmap: float
    f1: float
    acc: float
    keep: float
    gflops: float
    kind: str = "baseline"  # "baseline", "stprivacy" (judged by the floors) or "check" (shown only)


def blur(videos: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of every frame. Shape: (M, T, H, W, 3) uint8 -> same."""
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-x**2 / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    t = torch.from_numpy(videos).float().flatten(0, 1).permute(0, 3, 1, 2)
    t = F.conv2d(F.pad(t, (radius, radius, 0, 0), mode="replicate"), k, groups=3)
    t = F.conv2d(F.pad(t, (0, 0, radius, radius), mode="replicate"), k.transpose(2, 3), groups=3)
    return t.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).reshape(videos.shape).numpy()


def downsample(videos: np.ndarray, factor: int) -> np.ndarray:
    """Area-downsample by ``factor`` and scale back up (bilinear). Shape: (M, T, H, W, 3) -> same."""
    t = torch.from_numpy(videos).float().flatten(0, 1).permute(0, 3, 1, 2)
    size = t.shape[-1]
    t = F.interpolate(F.interpolate(t, scale_factor=1 / factor, mode="area"), size=(size, size),
                      mode="bilinear", align_corners=False)
    return t.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).reshape(videos.shape).numpy()


def epochs_of(data: SyntheticSet, batch: int, seed: int):
    counter = iter(range(seed, seed + 10_000))
    return lambda: synthetic_batches(data, batch, True, next(counter))


def plain_row(name: str, tr: SyntheticSet, te: SyntheticSet, args: argparse.Namespace,
              log) -> tuple[Row, STPrivacy]:
    cfg = preset("small", num_actions=len(ACTIONS), num_attributes=len(ATTRIBUTES), sparsify=False,
                 anonymize=False, actions=ACTIONS, attributes=ATTRIBUTES)
    torch.manual_seed(args.seed)
    model = STPrivacy(cfg)
    train(model, epochs_of(tr, 32, args.seed), TrainConfig(epochs=args.epochs, lr=2e-3, seed=args.seed),
          -(-len(tr) // 32))
    out = collect(model, synthetic_batches(te, 100, False), keep_ratio=1.0)
    action = top1(out.logits, out.actions)
    cnn = fit_attacker(lambda: VideoAttacker(len(ATTRIBUTES)), torch.from_numpy(tr.videos),
                       torch.from_numpy(tr.attributes), args.attacker_epochs, seed=args.seed)
    p = attribute_scores(predict_probs(cnn, torch.from_numpy(te.videos)), te.attributes, ATTRIBUTES)
    log(f"{name}: action {action:.3f} cMAP {p.cmap:.3f}")
    from veil.action.model import flops
    return Row(name, action, p.cmap, p.mean_f1, p.mean_accuracy, 1.0, flops(cfg, 1.0) / 1e9), model


def train_stprivacy(tr: SyntheticSet, raw_model: STPrivacy, args: argparse.Namespace, noise: float) -> STPrivacy:
    """STPrivacy fine-tuned from the raw-video model, as the paper fine-tunes a pretrained backbone."""
    cfg = preset("small", num_actions=len(ACTIONS), num_attributes=len(ATTRIBUTES), keep_ratio=0.5,
                 anonymizer_noise=noise, actions=ACTIONS, attributes=ATTRIBUTES)
    torch.manual_seed(args.seed)
    model = STPrivacy(cfg)
    init_from(model, raw_model)
    train(model, epochs_of(tr, 32, args.seed + 100),
          TrainConfig(epochs=args.stprivacy_epochs, lr=1e-3, privacy_weight=args.privacy_weight,
                      warmup=0.05, anneal=0.4, adversary_lr=2e-3, adversaries=args.adversaries,
                      restart_every=args.restart_every, encoder_privacy=args.encoder_privacy, seed=args.seed),
          -(-len(tr) // 32))
    return model


def stprivacy_row(name: str, model: STPrivacy, tr: SyntheticSet, te: SyntheticSet, args: argparse.Namespace,
                  ratio: float, strength: float, kind: str, log) -> Row:
    rep = evaluate(model, lambda: synthetic_batches(tr, 100, False), lambda: synthetic_batches(te, 100, False),
                   keep_ratio=ratio, strength=strength, attacker_epochs=args.attacker_epochs,
                   attacker_seed=args.seed)
    p = rep.privacy
    assert p is not None and rep.token_privacy is not None and rep.video_privacy is not None
    log(f"{name}: action {rep.action_top1:.3f} cMAP {p.cmap:.3f} "
        f"(token {rep.token_privacy.cmap:.3f}, video {rep.video_privacy.cmap:.3f})")
    return Row(name, rep.action_top1, p.cmap, p.mean_f1, p.mean_accuracy, rep.keep_ratio, rep.gflops, kind)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=2000, help="synthetic training clips")
    ap.add_argument("--test", type=int, default=400, help="synthetic test clips")
    ap.add_argument("--epochs", type=int, default=6, help="epochs of every action model")
    ap.add_argument("--stprivacy-epochs", type=int, default=5)
    ap.add_argument("--privacy-weight", type=float, default=3.0)
    ap.add_argument("--adversaries", type=int, default=2, help="adversaries trained against the anonymizer")
    ap.add_argument("--restart-every", type=int, default=2, help="epochs between adversary restarts")
    ap.add_argument("--anonymizer-noise", type=float, default=2.0,
                    help="std of the anonymizer's noise on unit-variance tokens (0 = none)")
    ap.add_argument("--encoder-privacy", type=float, default=0.0,
                    help="fraction of the adversarial gradient that reaches the encoder and predictors")
    ap.add_argument("--keep-ratios", default="0.3,0.5,0.7")
    ap.add_argument("--attacker-epochs", type=int, default=8)
    ap.add_argument("--blur-sigma", type=float, default=1.5)
    ap.add_argument("--downsample", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hmdb51", type=Path, help="HMDB51 root: not run here, see `veil action train`")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - start:6.0f}s] {msg}", flush=True)

    if args.hmdb51 is not None:
        log("real data sets are run with `veil action train/evaluate --dataset hmdb51 PATH`; "
            "this benchmark covers the synthetic set")
    tr = make_synthetic(args.train, frames=8, size=32, seed=args.seed + 1)
    te = make_synthetic(args.test, frames=8, size=32, seed=args.seed + 2)
    chance = chance_scores(te.attributes, ATTRIBUTES)
    rows: list[Row] = []
    raw_row, raw_model = plain_row("raw video", tr, te, args, log)
    rows.append(raw_row)
    for name, fn in ((f"blur (sigma {args.blur_sigma:g} px)", lambda v: blur(v, args.blur_sigma)),
                     (f"downsampling (x1/{args.downsample})", lambda v: downsample(v, args.downsample))):
        t2 = SyntheticSet(fn(tr.videos), tr.actions, tr.attributes)
        e2 = SyntheticSet(fn(te.videos), te.actions, te.attributes)
        rows.append(plain_row(name, t2, e2, args, log)[0])

    ratios = [float(r) for r in args.keep_ratios.split(",")]
    model = train_stprivacy(tr, raw_model, args, args.anonymizer_noise)
    log("STPrivacy trained")
    for ratio in ratios:
        rows.append(stprivacy_row(f"STPrivacy keep {ratio:g}", model, tr, te, args, ratio, 1.0, "stprivacy", log))
    # The deployment knob: strength 0 sends the sparsified but not anonymized tokens.
    rows.append(stprivacy_row("STPrivacy keep 0.5, strength 0", model, tr, te, args, 0.5, 0.0, "check", log))
    if args.anonymizer_noise > 0:  # what the adversary achieves without the noisy bottleneck
        plain = train_stprivacy(tr, raw_model, args, 0.0)
        rows.append(stprivacy_row("STPrivacy keep 0.5, no anonymizer noise", plain, tr, te, args, 0.5, 1.0,
                                  "check", log))
    write(rows, chance, args, time.time() - start)


def write(rows: list[Row], chance, args: argparse.Namespace, seconds: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = rows[0]
    st = [r for r in rows if r.kind == "stprivacy"]
    main_row = min(st, key=lambda r: abs(r.keep - 0.5))
    baselines = [r for r in rows[1:] if r.kind == "baseline"]
    lines = [
        "# Action recognition vs privacy (synthetic benchmark)",
        "",
        f"`bench/action_tradeoff.py`, {args.train} training / {args.test} test clips (8 frames, 32 px), "
        f"seed {args.seed}, privacy weight {args.privacy_weight:g}, {args.adversaries} adversaries restarted "
        f"every {args.restart_every} epochs, anonymizer noise {args.anonymizer_noise:g}, encoder privacy "
        f"{args.encoder_privacy:g}, {seconds / 60:.1f} min. Privacy: a fresh attacker trained after the model is "
        "frozen on what the service receives (one noisy draw per clip; lower is better); chance = base rate. "
        "The floors judge the STPrivacy rows at full strength; the last STPrivacy rows are checks: the "
        "deployment strength 0 (sparsified, not anonymized) and the same training without the anonymizer's noise.",
        "",
        "| method | action top-1 | privacy cMAP | privacy F1 | privacy acc | keep ratio | GFLOPs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.method} | {r.action:.3f} | {r.cmap:.3f} | {r.f1:.3f} | {r.acc:.3f} | "
                     f"{r.keep:.2f} | {r.gflops:.4f} |")
    lines.append(f"| chance | {1 / len(ACTIONS):.3f} | {chance.cmap:.3f} | {chance.mean_f1:.3f} | "
                 f"{chance.mean_accuracy:.3f} | | |")
    better = all(main_row.action >= b.action - 0.02 and main_row.cmap < b.cmap for b in baselines)
    checks = [
        (f"STPrivacy (keep {main_row.keep:.2f}) action within 5 points of raw",
         raw.action - main_row.action <= 0.05, f"{main_row.action:.3f} vs {raw.action:.3f}"),
        ("privacy cMAP within 10 points of chance", main_row.cmap - chance.cmap <= 0.10,
         f"{main_row.cmap:.3f} vs {chance.cmap:.3f}"),
        ("privacy accuracy within 10 points of chance", main_row.acc - chance.mean_accuracy <= 0.10,
         f"{main_row.acc:.3f} vs {chance.mean_accuracy:.3f}"),
        ("better trade-off than blur and downsampling (no worse action, lower cMAP)", better, ""),
    ]
    lines += ["", "| floor | met | numbers |", "|---|---|---|"]
    lines += [f"| {name} | {'yes' if ok else 'NO'} | {nums} |" for name, ok, nums in checks]
    (RESULTS / "action_tradeoff.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in rows:
        ax.scatter(r.cmap, r.action, marker="s" if r.kind == "baseline" else "o")
        ax.annotate(r.method, (r.cmap, r.action), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axvline(chance.cmap, ls="--", c="gray", lw=0.8)
    ax.set_xlabel("privacy cMAP of a fresh attacker (lower is better)")
    ax.set_ylabel("action top-1")
    ax.set_title("Synthetic benchmark: action vs privacy")
    fig.tight_layout()
    fig.savefig(RESULTS / "action_tradeoff.png", dpi=120)


if __name__ == "__main__":
    main()
