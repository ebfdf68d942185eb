"""Trains a `small` model on Tiny Shakespeare in PyTorch eager with the same
recipe as `lsc train` (byte tokens, first 90% train / last 10% validation,
random windows, AdamW β = (0.9, 0.95) with weight decay 0.1 on matrices only,
global-norm clip 1.0, linear warmup then cosine decay to `--min-lr`, the same
initialisation), and prints the validation loss every `--eval-every` steps
with the wall time. It answers two questions about `lsc train`: does lsc learn
as fast per step as PyTorch, and how long does PyTorch need to reach a loss.

    python bench/pytorch/train_curve.py --model ls-transformer --steps 400
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import make_golden as g
from bench_train import MODELS, SMALL

INIT_STD = 0.02  # lsc's runtime/src/init.rs


def init_params(kind, gen, a):
    p = g.params(SMALL, gen, kind)
    for name, t in p.items():
        if len(t.shape) == 1 and name.endswith(".weight"):
            p[name] = torch.ones_like(t)
        elif name.endswith(".bias"):
            p[name] = torch.zeros_like(t)
        else:
            std = INIT_STD
            if a.fan_in and len(t.shape) == 2 and "embed" not in name:
                std = t.shape[1] ** -0.5
            if a.std_qk is not None and (".q_proj" in name or ".k_proj" in name):
                std = a.std_qk
            if a.std_embed is not None and "embed" in name:
                std = a.std_embed
            if a.std_out is not None and (".o_proj" in name or ".down_proj" in name):
                std = a.std_out
            p[name] = std * torch.randn(t.shape, generator=gen)
    return p


def lr_at(step, a):
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    t = min(1.0, (step - a.warmup) / max(1, a.decay_steps - a.warmup))
    return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * t))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ls-transformer", choices=list(MODELS))
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared/data/tinyshakespeare/input.txt"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--decay-steps", type=int, default=950)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fan-in", action="store_true", help="matrices from N(0, 1/fan_in)")
    ap.add_argument("--std-qk", type=float, default=None)
    ap.add_argument("--std-embed", type=float, default=None)
    ap.add_argument("--std-out", type=float, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    text = torch.tensor(list(Path(a.data).read_bytes()), dtype=torch.long)
    split = len(text) * 9 // 10
    train, valid = text[:split], text[split:]
    gen = torch.Generator().manual_seed(a.seed)
    kind, fwd = MODELS[a.model]
    p = {k: v.requires_grad_() for k, v in init_params(kind, gen, a).items()}
    decay = [t for n, t in p.items() if t.dim() == 2 and "embed" not in n]
    rest = [t for n, t in p.items() if not (t.dim() == 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95)
    )

    def windows(src, starts):
        return torch.stack([src[s : s + a.seq + 1] for s in starts.tolist()])

    def val_loss():
        n = (len(valid) - 1) // a.seq
        starts = torch.arange(min(n, a.eval_windows)) * a.seq
        with torch.no_grad():
            ids = windows(valid, starts)
            logits = fwd(p, ids[:, :-1])
            return F.cross_entropy(logits.reshape(-1, SMALL["vocab"]), ids[:, 1:].reshape(-1)).item()

    start = time.perf_counter()
    trained = 0.0
    for step in range(a.steps):
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, a)
        ids = windows(train, torch.randint(0, len(train) - a.seq - 1, (a.batch,), generator=gen))
        logits = fwd(p, ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, SMALL["vocab"]), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(p.values(), 1.0)
        opt.step()
        trained += time.perf_counter() - t0
        last = step + 1 == a.steps or (a.max_seconds is not None and trained >= a.max_seconds)
        if (step + 1) % a.eval_every == 0 or last:
            print(json.dumps(dict(step=step + 1, train_s=round(trained, 1), wall_s=round(time.perf_counter() - start, 1),
                                  loss=round(loss.item(), 4), val_loss=round(val_loss(), 4))), flush=True)
        if last:
            break


if __name__ == "__main__":
    main()
