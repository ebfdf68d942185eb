"""Causal attention forward in PyTorch, timed as `lsc bench --kernels` times
lsc's global attention (B = 1, 8 heads of 32, T = 1024, 2048, 4096; best of
3 after one untimed run; 2 threads): `F.scaled_dot_product_attention` with
`is_causal=True`, and the same written out (scores, mask, softmax, product).

    pip install torch                     # not needed by lsc or its CI
    python bench/pytorch/bench_attention.py [--lsc lsc-kernels.json]

With `--lsc` (the output of `lsc bench --kernels --json`) it prints
lsc/PyTorch time ratios per T (above 1: lsc is faster).
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F


def best_of(f, reps=3):
    f()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def written_out(q, k, v):
    t = q.shape[2]
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lsc", help="`lsc bench --kernels --json` output")
    args = ap.parse_args()
    torch.set_num_threads(2)
    lsc = {}
    if args.lsc:
        with open(args.lsc) as f:
            lsc = {r["t"]: r["global_ms"] for r in json.load(f)["attention"]}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for t in (1024, 2048, 4096):
        g = torch.Generator().manual_seed(t)
        q, k, v = (torch.randn(1, 8, t, 32, generator=g) for _ in range(3))
        sdpa = best_of(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)) * 1e3
        plain = best_of(lambda: written_out(q, k, v)) * 1e3
        line = f"T = {t:<5} SDPA causal {sdpa:8.2f} ms   written out {plain:8.2f} ms"
        if t in lsc:
            line += f"   lsc global {lsc[t]:8.2f} ms ({sdpa / lsc[t]:.2f}x vs SDPA)"
        print(line)


if __name__ == "__main__":
    main()
