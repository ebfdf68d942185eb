"""Golden fixture for lsc: an independent PyTorch implementation of the
`transformer` / `ls-transformer` spec (README, "Models"), written from the
spec and not from lsc's IR.

Run once where PyTorch is installed:

    pip install torch safetensors numpy
    python bench/pytorch/make_golden.py tests/golden

It writes, for each model's `tiny` config,
    <model>-tiny.weights.safetensors   parameters by name
    <model>-tiny.io.safetensors        input_ids (I64 [B, T]) and logits (F32 [B, T, 256])
"""

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

TINY = dict(vocab=256, d=32, layers=2, heads=4, hidden=64, max_pos=64, window=4)


def rms_norm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def attention(x, p, prefix, heads, n_local, window):
    B, T, D = x.shape
    hd = D // heads
    q = (x @ p[f"{prefix}.q_proj.weight"].T).view(B, T, heads, hd).transpose(1, 2)
    k = (x @ p[f"{prefix}.k_proj.weight"].T).view(B, T, heads, hd).transpose(1, 2)
    v = (x @ p[f"{prefix}.v_proj.weight"].T).view(B, T, heads, hd).transpose(1, 2)
    i = torch.arange(T).view(T, 1)
    j = torch.arange(T).view(1, T)
    causal = j <= i
    local = causal & (i - j < window)
    mask = torch.stack([local if h < n_local else causal for h in range(heads)])  # [H, T, T]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(hd))
    out = out.transpose(1, 2).reshape(B, T, D)
    return out @ p[f"{prefix}.o_proj.weight"].T


def forward(p, ids, cfg, n_local):
    T = ids.shape[1]
    x = p["embed.weight"][ids] + p["pos_embed.weight"][:T]
    for l in range(cfg["layers"]):
        pre = f"layers.{l}"
        h = rms_norm(x, p[f"{pre}.attn_norm.weight"])
        x = x + attention(h, p, f"{pre}.attn", cfg["heads"], n_local, cfg["window"])
        h = rms_norm(x, p[f"{pre}.mlp_norm.weight"])
        gate = F.silu(h @ p[f"{pre}.mlp.gate_proj.weight"].T)
        up = h @ p[f"{pre}.mlp.up_proj.weight"].T
        x = x + (gate * up) @ p[f"{pre}.mlp.down_proj.weight"].T
    return rms_norm(x, p["norm_f.weight"]) @ p["lm_head.weight"].T


def params(cfg, gen):
    d, hid, L = cfg["d"], cfg["hidden"], cfg["layers"]
    shapes = {"embed.weight": (cfg["vocab"], d), "pos_embed.weight": (cfg["max_pos"], d)}
    for l in range(L):
        shapes[f"layers.{l}.attn_norm.weight"] = (d,)
        for n in "qkvo":
            shapes[f"layers.{l}.attn.{n}_proj.weight"] = (d, d)
        shapes[f"layers.{l}.mlp_norm.weight"] = (d,)
        shapes[f"layers.{l}.mlp.gate_proj.weight"] = (hid, d)
        shapes[f"layers.{l}.mlp.up_proj.weight"] = (hid, d)
        shapes[f"layers.{l}.mlp.down_proj.weight"] = (d, hid)
    shapes["norm_f.weight"] = (d,)
    shapes["lm_head.weight"] = (cfg["vocab"], d)
    p = {}
    for name, shape in shapes.items():
        if len(shape) == 1:  # norm gains: not all ones, so the test sees them
            p[name] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            p[name] = 0.2 * torch.randn(shape, generator=gen)
    return p


def main(out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    for model, n_local in (("transformer", 0), ("ls-transformer", TINY["heads"] // 2)):
        gen = torch.Generator().manual_seed(1234 + n_local)
        p = params(TINY, gen)
        ids = torch.randint(0, 256, (2, 24), generator=gen, dtype=torch.int64)
        with torch.no_grad():
            logits = forward(p, ids, TINY, n_local)
        save_file({k: v.contiguous() for k, v in p.items()}, str(out / f"{model}-tiny.weights.safetensors"))
        save_file({"input_ids": ids, "logits": logits.float().contiguous()}, str(out / f"{model}-tiny.io.safetensors"))
        print(f"{model}: logits {tuple(logits.shape)}, |logits|max {logits.abs().max():.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/golden")
