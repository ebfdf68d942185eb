"""Greedy decoding of `ls-transformer` `small` in PyTorch eager with a
preallocated KV cache under `torch.no_grad()`, timed as `lsc bench --kernels`
times lsc's (a 16-token prompt, one untimed token, then 64 timed tokens; the
median of 10 sequences after a warm-up one; B = 1 and 8; 2 threads).

    pip install torch safetensors numpy            # not needed by lsc or its CI
    python bench/pytorch/bench_decode.py

The model is `make_golden.py`'s spec model at the `small` config (rotary
positions); the cache keeps every position's rotated keys and values, and local
heads see their last 64.
"""

import math
import time

import torch
import torch.nn.functional as F

import make_golden as g

SMALL = dict(vocab=256, d=256, layers=4, heads=8, hidden=768, max_pos=256, window=64)
N_LOCAL = SMALL["heads"] // 2


@torch.no_grad()
def step(p, ids, pos, cache):
    """Logits of `ids` [B, T] at positions pos..pos+T, appending to `cache`."""
    B, T = ids.shape
    H, D = SMALL["heads"], SMALL["d"]
    hd = D // H
    x = p["embed.weight"][ids]
    cos, sin = g.rotary_tables(hd, pos, T)  # once per step, shared by the layers
    for l in range(SMALL["layers"]):
        pre = f"layers.{l}"
        h = g.rms_norm(x, p[f"{pre}.attn_norm.weight"])
        proj = lambda n: (h @ p[f"{pre}.attn.{n}_proj.weight"].T).view(B, T, H, hd).transpose(1, 2)
        q, k, v = g.apply_rotary(proj("q"), cos, sin), g.apply_rotary(proj("k"), cos, sin), proj("v")
        # A preallocated cache: the new keys and values are written in place.
        if l not in cache:
            cache[l] = (k.new_zeros(B, H, SMALL["max_pos"], hd), v.new_zeros(B, H, SMALL["max_pos"], hd))
        cache[l][0][:, :, pos : pos + T] = k
        cache[l][1][:, :, pos : pos + T] = v
        S = pos + T
        k, v = cache[l][0][:, :, :S], cache[l][1][:, :, :S]
        i = torch.arange(pos, pos + T).view(T, 1)
        j = torch.arange(S).view(1, S)
        causal = j <= i
        local = causal & (i - j < SMALL["window"])
        mask = torch.stack([local if hh < N_LOCAL else causal for hh in range(H)])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(hd))
        x = x + out.transpose(1, 2).reshape(B, T, D) @ p[f"{pre}.attn.o_proj.weight"].T
        x = g.mlp(x, p, pre)
    return g.rms_norm(x, p["norm_f.weight"]) @ p["lm_head.weight"].T


def tokens_per_s(p, batch, tokens=64, repeats=10):
    """The median over `repeats` sequences of the tokens/s of `tokens` greedy steps."""
    speeds = []
    for _ in range(repeats + 1):  # the first sequence warms up
        cache = {}
        step(p, torch.ones(batch, 16, dtype=torch.long), 0, cache)
        nxt = torch.ones(batch, 1, dtype=torch.long)
        step(p, nxt, 16, cache)  # one untimed token
        start = time.perf_counter()
        for t in range(tokens):
            logits = step(p, nxt, 17 + t, cache)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
        speeds.append(batch * tokens / (time.perf_counter() - start))
    return sorted(speeds[1:])[repeats // 2]


def main():
    torch.set_num_threads(2)
    p = g.params(SMALL, torch.Generator().manual_seed(0), "transformer")
    print(f"greedy decode, ls-transformer small, PyTorch eager {torch.__version__}, 2 threads")
    for batch in (1, 8):
        print(f"  B = {batch:<2} {tokens_per_s(p, batch):8.1f} tokens/s", flush=True)


if __name__ == "__main__":
    main()
