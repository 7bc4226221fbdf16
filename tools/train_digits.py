"""Reproduce the embedded digits models (papa_core/digits/assets/).

    python -m tools.train_digits classifier          # ~1 min on 2 CPU cores
    python -m tools.train_digits unet --steps 4000   # ~25 min on 2 CPU cores
    python -m tools.train_digits evaluate            # the acceptance figures for the base model

Data: scikit-learn's bundled digits, 16×16 (papa_core.digits.data). Everything is seeded; the log
of the committed run is assets/train_log.txt.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file


from papa_core.digits.data import digits_16, split_indices  # noqa: E402
from papa_core.digits.metrics import batch_quality  # noqa: E402
from papa_core.digits.models import (  # noqa: E402
    ASSETS, CLASSIFIER_FILE, SCHEDULE_CONFIG, UNET_FILE, DigitClassifier, build_unet, digits_schedule, load_classifier, load_unet,
)
from papa_core.sampling import sample  # noqa: E402


def log(msg: str) -> None:
    print(msg, flush=True)


def random_shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image by up to ±max_shift pixels (background = -1)."""
    b = x.shape[0]
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=g)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=g)
    h, w = x.shape[-2:]
    return torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def train_classifier(epochs: int = 40, seed: int = 0) -> None:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = digits_16()
    tr, te = split_indices(len(x))
    xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
    model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * math.ceil(len(xtr) / 64))
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 64):
            idx = perm[i:i + 64]
            xb = random_shift(xtr[idx], g)
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(-1) == yte).float().mean().item()
        if ep % 5 == 4 or ep == epochs - 1:
            log(f"classifier epoch {ep + 1}/{epochs} loss {loss.item():.4f} held-out accuracy {acc:.4f}")
    ASSETS.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(CLASSIFIER_FILE),
              metadata={"heldout_accuracy": f"{acc:.4f}", "heldout_size": str(len(te)), "seed": str(seed)})
    log(f"classifier held-out accuracy {acc:.4f} on {len(te)} digits -> {CLASSIFIER_FILE}")


def train_unet(steps: int, batch: int, lr: float, ema_decay: float, seed: int) -> None:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, _ = digits_16()
    schedule = digits_schedule()
    a_bar = schedule.alphas_cumprod.float()
    model = build_unet()
    ema = copy.deepcopy(model).requires_grad_(False)
    log(f"unet parameters {sum(p.numel() for p in model.parameters()):,}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = 200
    t0 = time.time()
    for step in range(1, steps + 1):
        scale = min(1.0, step / warmup) * (0.5 * (1 + math.cos(math.pi * step / steps)) * 0.95 + 0.05)
        for group in opt.param_groups:
            group["lr"] = lr * scale
        idx = torch.randint(0, len(x), (batch,), generator=g)
        x0 = x[idx]
        t = torch.randint(0, schedule.num_timesteps, (batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = a_bar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = F.mse_loss(model(xt, t).sample, eps)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        d = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
        if step % 100 == 0 or step == steps:
            log(f"unet step {step}/{steps} loss {loss.item():.4f} lr {lr * scale:.2e} {time.time() - t0:.0f}s")
        if step % 1000 == 0 or step == steps:
            ASSETS.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(UNET_FILE),
                      metadata={"steps": str(step), "batch": str(batch), "lr": str(lr), "ema_decay": str(ema_decay),
                                "seed": str(seed), "schedule": json.dumps(SCHEDULE_CONFIG)})
    log(f"unet saved (EMA) -> {UNET_FILE}")


def evaluate(n: int, steps_list: list[int], etas: list[float], seed: int) -> None:
    unet = load_unet()
    clf = load_classifier()
    schedule = digits_schedule()
    for steps in steps_list:
        for eta in etas:
            g = torch.Generator().manual_seed(seed)
            noise = torch.randn((n, 1, 16, 16), generator=g)
            t0 = time.time()
            imgs = sample(lambda xt, t: unet(xt, t).sample, schedule, noise, num_steps=steps, eta=eta, generator=g)
            q = batch_quality(clf, imgs)
            log(f"base model, {n} samples, {steps} steps, eta {eta}: confident(>0.9) {q.confident_share:.3f} "
                f"min class share {min(q.class_share):.3f} nearest-real {q.nearest_real:.3f} "
                f"classes {q.class_share} ({time.time() - t0:.0f}s)")
    real, _ = digits_16()
    qr = batch_quality(clf, real)
    log(f"real digits: confident(>0.9) {qr.confident_share:.3f} nearest-real(self) {qr.nearest_real:.3f}")


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("classifier")
    c.add_argument("--epochs", type=int, default=40)
    c.add_argument("--seed", type=int, default=0)
    u = sub.add_parser("unet")
    u.add_argument("--steps", type=int, default=4000)
    u.add_argument("--batch", type=int, default=64)
    u.add_argument("--lr", type=float, default=1e-3)
    u.add_argument("--ema-decay", type=float, default=0.999)
    u.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("evaluate")
    e.add_argument("--n", type=int, default=500)
    e.add_argument("--steps", type=int, nargs="+", default=[50])
    e.add_argument("--eta", type=float, nargs="+", default=[1.0])
    e.add_argument("--seed", type=int, default=1234)
    a = p.parse_args()
    if a.what == "classifier":
        train_classifier(a.epochs, a.seed)
    elif a.what == "unet":
        train_unet(a.steps, a.batch, a.lr, a.ema_decay, a.seed)
    else:
        evaluate(a.n, a.steps, a.eta, a.seed)


if __name__ == "__main__":
    main()
