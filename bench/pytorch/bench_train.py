"""Times the `small` training step of lsc's built-in models in PyTorch, eager
and `torch.compile`, on the same machine and with the same shapes as
`lsc bench` (batch 8 × 256 tokens, AdamW, 2 threads), and prints lsc/PyTorch
ratios when given `lsc bench --json` output.

    pip install torch safetensors numpy            # not needed by lsc or its CI
    cargo run --release -- bench --steps 4 --json > /tmp/lsc.json
    python bench/pytorch/bench_train.py --lsc /tmp/lsc.json

The models are the independent PyTorch definitions of `make_golden.py` (written
from the spec), at the `small` config. Differences from lsc's step: `mor` has
no auxiliary router loss here (its top-k selection is the same), and `trilm`
trains through a straight-through estimator as lsc's does.
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F

import make_golden as g

SMALL = dict(vocab=256, d=256, layers=4, heads=8, hidden=768, max_pos=256, window=64)


def ternarize_ste(w):
    return w + (g.ternarize(w) - w).detach()


MODELS = {
    "transformer": ("transformer", lambda p, ids: g.forward(p, ids, SMALL, 0)),
    "ls-transformer": ("transformer", lambda p, ids: g.forward(p, ids, SMALL, SMALL["heads"] // 2)),
    "gam": ("gam", lambda p, ids: g.gam_forward(p, ids, SMALL)),
    "trilm": ("transformer", lambda p, ids: g.forward(p, ids, SMALL, 0, ternarize_ste)),
    "mor": ("mor", lambda p, ids: g.mor_forward(p, ids, SMALL)),
}


def tokens_per_s(model, compiled, batch, seq, steps):
    kind, fwd = MODELS[model]
    gen = torch.Generator().manual_seed(0)
    p = {k: v.requires_grad_() for k, v in g.params(SMALL, gen, kind).items()}
    opt = torch.optim.AdamW(p.values(), lr=1e-3, weight_decay=0.1)

    def step(ids):
        logits = fwd(p, ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, SMALL["vocab"]), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    run = torch.compile(step) if compiled else step
    data = torch.randint(0, 256, (steps + 2, batch, seq + 1), generator=gen)
    run(data[0])  # warm-up (and compilation)
    run(data[1])
    start = time.perf_counter()
    for s in range(steps):
        run(data[s + 2])
    return batch * seq * steps / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="time eager mode only")
    ap.add_argument("--lsc", help="`lsc bench --json` output to compare against")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lsc = {}
    if a.lsc:
        with open(a.lsc) as f:
            lsc = {r["model"]: r for r in json.load(f)["training_step"]}
    print(f"training step, batch {a.batch} x seq {a.seq}, {a.steps} timed steps, {a.threads} threads, torch {torch.__version__}")
    for m in a.models.split(","):
        eager = tokens_per_s(m, False, a.batch, a.seq, a.steps)
        line = f"{m:<16} eager {eager:8.0f} tok/s"
        compiled = None
        if not a.no_compile:
            try:
                compiled = tokens_per_s(m, True, a.batch, a.seq, a.steps)
                line += f"   torch.compile {compiled:8.0f} tok/s"
            except Exception as e:  # report, do not hide: compile needs a C++ toolchain
                line += f"   torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
        for backend in ("cranelift", "llvm"):
            ours = lsc.get(m, {}).get(f"{backend}_tokens_per_s")
            if ours:
                line += f"   lsc {backend} {ours:8.0f} ({ours / eager:.2f}x eager"
                line += f", {ours / compiled:.2f}x compiled)" if compiled else ")"
        print(line, flush=True)


if __name__ == "__main__":
    main()
