"""Training of STPrivacy: action loss, sparsity ratio loss, and a min-max game with an adversary.

One step (Li et al., 2023, Sec. 3.4, with the choices of `anonymize.py`):

1. the model (encoder, predictors, anonymizer, action head) minimises
   ``CE(action) + w_ratio * ratio + privacy_weight * confusion(adversary(A(x.detach()) + pos, keep.detach()))``;
   ``privacy_weight`` is the trade-off weight of training (0 trains a sparsified action model only);
   with ``encoder_privacy`` = g > 0, g times the adversarial gradient also flows into the encoder
   through ``x`` and into the keep predictors through the (straight-through) keep mask;
2. the adversaries are fitted to the attributes on the detached anonymized tokens plus their tubelet
   positions (`anonymize.py`);
3. the preview decoder is fitted to the raw tubelets from the detached anonymized tokens.

Schedule (our choice; the paper fine-tunes a pretrained ViT, which has no such trouble): a model
trained from scratch cannot learn actions while a random predictor drops half of its tokens and an
adversary pulls at its features. So for the first ``warmup`` fraction of the steps every token is kept
and the privacy weight is 0; then the keep ratio anneals linearly to its target and the privacy weight
ramps up over the next ``anneal`` fraction. `init_from` copies the weights of a trained model (e.g. a
plain action model, as the paper starts from pretrained weights), after which a short run suffices.

Adversaries are re-initialised every ``restart_every`` epochs ("model restarting", Wu et al., TPAMI
2020): an anonymizer that only fooled one adversary's current weights is exposed by a fresh one, which
is what the evaluation's attacker is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from veil.action.anonymize import blend, confusion_loss
from veil.action.blocks import TokenClassifier
from veil.action.config import ActionConfig
from veil.action.model import STPrivacy, to_input, tubelets
from veil.action.sparsify import ratio_loss
from veil.errors import InputError
from veil.models import checkpoint as checkpoint_io

__all__ = ["TrainConfig", "StepLog", "train", "schedule", "init_from", "save_checkpoint", "load_checkpoint"]

FORMAT = "veil-stprivacy/1"
Batch = tuple[Tensor, Tensor, Tensor]  # (B, T, H, W, 3) uint8, (B,) actions, (B, A) attributes


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    adversary_lr: float = 1e-3
    privacy_weight: float = 1.0
    ratio_weight: float = 2.0
    random_strength_weight: float = 0.5  # action loss at a random deployment strength
    adversaries: int = 2
    adversary_steps: int = 2  # adversary updates per model update: it must keep up with the anonymizer
    restart_every: int = 2
    encoder_privacy: float = 0.0  # fraction of the adversarial gradient reaching encoder and predictors
    tau: float = 1.0
    warmup: float = 0.2  # fraction of steps with every token kept and no privacy loss
    anneal: float = 0.4  # fraction of steps over which keep ratio and privacy weight reach their targets
    seed: int = 0


def schedule(progress: float, cfg: TrainConfig, keep_ratio: float) -> tuple[float, float]:
    """(keep ratio, privacy weight) at ``progress`` in [0, 1] of training."""
    if progress < cfg.warmup:
        return 1.0, 0.0
    ramp = min(1.0, (progress - cfg.warmup) / cfg.anneal) if cfg.anneal > 0 else 1.0
    return 1.0 + ramp * (keep_ratio - 1.0), ramp * cfg.privacy_weight


@dataclass
class StepLog:
    epoch: int
    step: int
    steps_per_epoch: int
    losses: dict[str, float] = field(default_factory=dict)


def _adversaries(config: ActionConfig, count: int) -> nn.ModuleList:
    return nn.ModuleList(
        TokenClassifier(config.dim, config.heads, config.head_depth, config.num_attributes, config.mlp_ratio)
        for _ in range(count)
    )


def _scale_grad(x: Tensor, g: float) -> Tensor:
    """``x`` in the forward pass; ``g`` times its gradient in the backward pass (0 detaches)."""
    return x.detach() if g == 0 else x.detach() + g * (x - x.detach())


def _model_step(model: STPrivacy, adversaries: nn.ModuleList, batch: Batch, cfg: TrainConfig,
                prior: Tensor, keep_ratio: float, privacy_weight: float
                ) -> tuple[Tensor, dict[str, float], Tensor, Tensor]:
    video, action, _ = batch
    x = to_input(video)
    enc = model.encode(x, keep_ratio=keep_ratio, tau=cfg.tau)
    keep = enc.keep
    logs: dict[str, float] = {}
    if model.anonymizer is not None:
        anonymized = model.anonymizer(enc.tokens, keep)
        z = anonymized
    else:
        z = enc.tokens
    loss = F.cross_entropy(model.head(z, keep), action)
    logs["action"] = float(loss.detach())
    if model.anonymizer is not None and cfg.random_strength_weight > 0:
        s = torch.rand(x.shape[0], device=x.device)
        loss = loss + cfg.random_strength_weight * F.cross_entropy(
            model.head(blend(enc.tokens, anonymized, s), keep), action)
    if enc.stage_keeps:
        r = ratio_loss(enc.stage_keeps, keep_ratio)
        loss = loss + cfg.ratio_weight * r
        logs["kept"] = float(keep.detach().mean())
    if model.anonymizer is not None and len(adversaries) and privacy_weight > 0:
        g = cfg.encoder_privacy
        tokens = _scale_grad(enc.tokens, g)
        kmask = _scale_grad(keep, g)
        a = model.anonymizer(tokens, kmask) + model.pos
        conf = torch.stack([confusion_loss(adv(a, kmask), prior) for adv in adversaries]).mean()
        loss = loss + privacy_weight * conf
        logs["confusion"] = float(conf.detach())
    target = tubelets(x, model.config.tubelet)
    w = keep.detach().unsqueeze(-1)
    recon = ((model.decoder(z.detach()) - target).pow(2) * w).sum() / (w.sum() * target.shape[-1])
    loss = loss + recon
    logs["recon"] = float(recon.detach())
    return loss, logs, z.detach(), keep.detach()


def train(model: STPrivacy, batches: Callable[[], Iterable[Batch]], cfg: TrainConfig,
          steps_per_epoch: int, on_step: Callable[[StepLog], None] | None = None) -> nn.ModuleList:
    """Train ``model`` in place; returns the final adversaries.

    ``batches()`` yields one epoch of ``(video uint8 (B,T,H,W,3), action (B,), attributes (B,A))``.
    """
    if cfg.epochs < 1:
        raise InputError(f"epochs must be at least 1, got {cfg.epochs}")
    if not 0.0 <= cfg.encoder_privacy <= 1.0:
        raise InputError(f"encoder_privacy must be in [0, 1], got {cfg.encoder_privacy}")
    torch.manual_seed(cfg.seed)
    use_adv = model.anonymizer is not None and model.config.num_attributes > 0 and cfg.adversaries > 0
    adversaries = _adversaries(model.config, cfg.adversaries if use_adv else 0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1), pct_start=0.1)
    adv_opt = torch.optim.Adam(adversaries.parameters(), lr=cfg.adversary_lr) if use_adv else None
    seen = torch.zeros(model.config.num_attributes)
    count = 0
    model.train()
    step_no = 0
    for epoch in range(cfg.epochs):
        if use_adv and epoch and cfg.restart_every and epoch % cfg.restart_every == 0:
            adversaries = _adversaries(model.config, cfg.adversaries)
            adv_opt = torch.optim.Adam(adversaries.parameters(), lr=cfg.adversary_lr)
        for step, batch in enumerate(batches()):
            attrs = batch[2].float()
            seen += attrs.sum(dim=0)
            count += len(attrs)
            prior = seen / max(count, 1)
            ratio, weight = schedule(step_no / max(total, 1), cfg, model.config.keep_ratio)
            loss, logs, z, keep = _model_step(model, adversaries, batch, cfg, prior, ratio, weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step_no < total:
                sched.step()
            step_no += 1
            for _ in range(cfg.adversary_steps if adv_opt is not None else 0):
                adv_loss = torch.stack([F.binary_cross_entropy_with_logits(adv(z + model.pos, keep), attrs)
                                        for adv in adversaries]).mean()
                adv_opt.zero_grad(set_to_none=True)
                adv_loss.backward()
                adv_opt.step()
                logs["adversary"] = float(adv_loss.detach())
            if on_step is not None:
                on_step(StepLog(epoch, step, steps_per_epoch, logs))
    model.eval()
    return adversaries


def init_from(model: STPrivacy, source: STPrivacy) -> list[str]:
    """Copy every weight whose name and shape match (embedding, blocks, head); returns their names."""
    theirs = source.state_dict()
    mine = model.state_dict()
    copied = [k for k, v in theirs.items() if k in mine and mine[k].shape == v.shape]
    model.load_state_dict({**mine, **{k: theirs[k] for k in copied}})
    return copied


def save_checkpoint(path: str | Path, model: STPrivacy, train_config: TrainConfig | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Weights plus the config needed to rebuild the model; written atomically."""
    payload = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "train_config": asdict(train_config) if train_config else None,
        "state_dict": model.state_dict(),
        "extra": extra or {},
    }
    return checkpoint_io.save_blob(payload, path)


def load_checkpoint(path: str | Path) -> tuple[STPrivacy, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns it in eval mode with the checkpoint's ``extra``."""
    payload = checkpoint_io.load_blob(path, FORMAT, "action", "train one with `veil train action`")
    model = STPrivacy(ActionConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload.get("extra") or {}
