"""Golden fixture for lsc: an independent PyTorch implementation of the
`transformer` / `ls-transformer` spec (README, "Models"), written from the
spec and not from lsc's IR.

Run once where PyTorch is installed:

    pip install torch safetensors numpy
    python bench/pytorch/make_golden.py tests/golden

It writes, for each built-in model's `tiny` config (transformer, ls-transformer,
trilm, gam, and mor with expert-choice top-k routing),
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


ROPE_BASE = 10000.0


def rotary_tables(hd, start, T):
    """cos and sin [T, hd/2] of the angles position * base^(-2i/hd), positions start..start+T."""
    inv_freq = ROPE_BASE ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    angles = torch.arange(start, start + T, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    """RoPE in the "rotate half" layout: feature i of x [B, H, T, hd] pairs with i + hd/2."""
    hd = x.shape[3]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def rotary(x, start=0):
    """x [B, H, T, hd] at positions start..start+T, rotated."""
    return apply_rotary(x, *rotary_tables(x.shape[3], start, x.shape[2]))


def attention(x, p, prefix, heads, n_local, window, key_ok=None, rope=True):
    B, T, D = x.shape
    hd = D // heads
    q = (x @ p[f"{prefix}.q_proj.weight"].T).view(B, T, heads, hd).transpose(1, 2)
    k = (x @ p[f"{prefix}.k_proj.weight"].T).view(B, T, heads, hd).transpose(1, 2)
    v = (x @ p[f"{prefix}.v_proj.weight"].T).view(B, T, heads, hd).transpose(1, 2)
    if rope:
        q, k = rotary(q), rotary(k)
    i = torch.arange(T).view(T, 1)
    j = torch.arange(T).view(1, T)
    causal = j <= i
    local = causal & (i - j < window)
    mask = torch.stack([local if h < n_local else causal for h in range(heads)])  # [H, T, T]
    if key_ok is not None:  # MoR: only active tokens (or the query itself) may be attended to
        mask = mask & (key_ok[:, None, None, :] | torch.eye(T, dtype=torch.bool))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(hd))
    out = out.transpose(1, 2).reshape(B, T, D)
    return out @ p[f"{prefix}.o_proj.weight"].T


def ternarize(w):
    s = w.abs().mean().clamp(min=1e-5)
    return torch.clamp(torch.round(w / s), -1, 1) * s  # torch.round is half-to-even


def mlp(x, p, pre, quant=lambda w: w):
    h = rms_norm(x, p[f"{pre}.mlp_norm.weight"])
    gate = F.silu(h @ quant(p[f"{pre}.mlp.gate_proj.weight"]).T)
    up = h @ quant(p[f"{pre}.mlp.up_proj.weight"]).T
    return x + (gate * up) @ quant(p[f"{pre}.mlp.down_proj.weight"]).T


def block(x, p, pre, cfg, n_local, quant=lambda w: w, key_ok=None, rope=True):
    h = rms_norm(x, p[f"{pre}.attn_norm.weight"])
    q = {k: v for k, v in p.items()}
    for n in "qkvo":
        q[f"{pre}.attn.{n}_proj.weight"] = quant(p[f"{pre}.attn.{n}_proj.weight"])
    x = x + attention(h, q, f"{pre}.attn", cfg["heads"], n_local, cfg["window"], key_ok, rope)
    return mlp(x, p, pre, quant)


def embed(p, ids):
    """Token embeddings plus learned absolute positions (GAM, MoR)."""
    return p["embed.weight"][ids] + p["pos_embed.weight"][: ids.shape[1]]


def forward(p, ids, cfg, n_local, quant=lambda w: w):
    """transformer / ls-transformer / trilm: rotary positions, no position table."""
    x = p["embed.weight"][ids]
    for l in range(cfg["layers"]):
        x = block(x, p, f"layers.{l}", cfg, n_local, quant)
    return rms_norm(x, p["norm_f.weight"]) @ p["lm_head.weight"].T


def gam_forward(p, ids, cfg):
    x = embed(p, ids)
    D = cfg["d"]
    for l in range(cfg["layers"]):
        pre = f"layers.{l}"
        h = rms_norm(x, p[f"{pre}.gam_norm.weight"])
        conv = F.conv1d(F.pad(h.transpose(1, 2), (2, 0)), p[f"{pre}.gam.conv.weight"], p[f"{pre}.gam.conv.bias"], groups=D)
        local = conv.transpose(1, 2)
        mem = p[f"{pre}.gam.memory"]
        glob = torch.softmax(h @ mem.T, dim=-1) @ mem
        gates = torch.sigmoid(h @ p[f"{pre}.gam.gate_proj.weight"].T + p[f"{pre}.gam.gate_proj.bias"])
        x = x + gates[..., :D] * local + gates[..., D:] * glob
        x = mlp(x, p, pre)
    return rms_norm(x, p["norm_f.weight"]) @ p["lm_head.weight"].T


def mor_forward(p, ids, cfg, caps=(1.0, 0.75, 0.5, 0.25)):
    """Expert-choice MoR: one shared block, gated residual, top-k per sequence."""
    h = embed(p, ids)
    B, T, D = h.shape
    active = torch.ones(B, T, dtype=torch.bool)
    for r, cap in enumerate(caps):
        score = (h @ p[f"routers.{r}.weight"].T)[..., 0]
        k = T if cap >= 1.0 else max(1, round(cap * T))  # Python's round is half-to-even
        masked = torch.where(active, score, torch.full_like(score, float("-inf")))
        idx = torch.sort(torch.topk(masked, k, dim=1).indices, dim=1).values
        active = torch.zeros(B, T, dtype=torch.bool).scatter(1, idx, True)
        rows = idx[..., None].expand(B, k, D)
        hs = h.gather(1, rows)
        out = block(hs, p, "shared", cfg, 0, key_ok=torch.ones(B, k, dtype=torch.bool), rope=False)
        gate = torch.sigmoid(score.gather(1, idx))[..., None]
        h = h.scatter(1, rows, hs + gate * (out - hs))
    return rms_norm(h, p["norm_f.weight"]) @ p["lm_head.weight"].T


def block_shapes(pre, d, hid, mixer="attn"):
    shapes = {}
    if mixer == "attn":
        shapes[f"{pre}.attn_norm.weight"] = (d,)
        for n in "qkvo":
            shapes[f"{pre}.attn.{n}_proj.weight"] = (d, d)
    else:
        shapes[f"{pre}.gam_norm.weight"] = (d,)
        shapes[f"{pre}.gam.conv.weight"] = (d, 1, 3)
        shapes[f"{pre}.gam.conv.bias"] = (d,)
        shapes[f"{pre}.gam.memory"] = (64, d)
        shapes[f"{pre}.gam.gate_proj.weight"] = (2 * d, d)
        shapes[f"{pre}.gam.gate_proj.bias"] = (2 * d,)
    shapes[f"{pre}.mlp_norm.weight"] = (d,)
    shapes[f"{pre}.mlp.gate_proj.weight"] = (hid, d)
    shapes[f"{pre}.mlp.up_proj.weight"] = (hid, d)
    shapes[f"{pre}.mlp.down_proj.weight"] = (d, hid)
    return shapes


def params(cfg, gen, kind="transformer"):
    d, hid, L = cfg["d"], cfg["hidden"], cfg["layers"]
    shapes = {"embed.weight": (cfg["vocab"], d)}
    if kind != "transformer":  # the transformer family uses rotary positions
        shapes["pos_embed.weight"] = (cfg["max_pos"], d)
    if kind == "mor":
        shapes.update({f"routers.{r}.weight": (1, d) for r in range(4)})
        shapes.update(block_shapes("shared", d, hid))
    else:
        for l in range(L):
            shapes.update(block_shapes(f"layers.{l}", d, hid, "gam" if kind == "gam" else "attn"))
    shapes["norm_f.weight"] = (d,)
    shapes["lm_head.weight"] = (cfg["vocab"], d)
    p = {}
    for name, shape in shapes.items():
        if len(shape) == 1 and name.endswith(".weight"):  # norm gains: not all ones, so the test sees them
            p[name] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif name.startswith("routers."):  # strong routers: clear top-k choices
            p[name] = 2.0 * torch.randn(shape, generator=gen)
        else:
            p[name] = 0.2 * torch.randn(shape, generator=gen)
    return p


def main(out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    models = {
        "transformer": ("transformer", lambda p, ids: forward(p, ids, TINY, 0)),
        "ls-transformer": ("transformer", lambda p, ids: forward(p, ids, TINY, TINY["heads"] // 2)),
        "trilm": ("transformer", lambda p, ids: forward(p, ids, TINY, 0, ternarize)),
        "gam": ("gam", lambda p, ids: gam_forward(p, ids, TINY)),
        "mor": ("mor", lambda p, ids: mor_forward(p, ids, TINY)),
    }
    for i, (model, (kind, fwd)) in enumerate(models.items()):
        gen = torch.Generator().manual_seed(1234 + (2 if model == "ls-transformer" else 0) + 10 * (i if i > 1 else 0))
        p = params(TINY, gen, kind)
        ids = torch.randint(0, 256, (2, 24), generator=gen, dtype=torch.int64)
        with torch.no_grad():
            logits = fwd(p, ids)
        save_file({k: v.contiguous() for k, v in p.items()}, str(out / f"{model}-tiny.weights.safetensors"))
        save_file({"input_ids": ids, "logits": logits.float().contiguous()}, str(out / f"{model}-tiny.io.safetensors"))
        print(f"{model}: logits {tuple(logits.shape)}, |logits|max {logits.abs().max():.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/golden")
