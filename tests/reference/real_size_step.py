"""One LoRA / QLoRA training step and a greedy decode of a Qwen2-family model at real size, in
PyTorch f32 on the CPU: the independent side of `npm run real-size` (scripts/real-size.ts).

Written from transformers' models/qwen2/modeling_qwen2.py (RMSNorm, q/k/v biases, GQA, rotate-half
RoPE, SiLU-gated MLP, tied head) and PEFT's LoRA (y += (alpha/r)·B·A·x), with QLoRA's frozen base as
the bitsandbytes NF4 round trip (blocks of 64, optional double quantization of the block scales) —
vectorised here because real layers hold millions of blocks.

Usage: /usr/bin/python3 real_size_step.py MODEL_DIR LORA.safetensors BATCH.json OUT.json [--nf4] [--dq]
"""
import json
import math
import struct
import sys
import time

import numpy as np
import torch

import gen_nf4
from gen_engine import rmsnorm, rotate_half

torch.set_num_threads(2)
LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        b, e = h["data_offsets"]
        raw = np.frombuffer(data, dtype=np.uint8, count=e - b, offset=b)
        if h["dtype"] == "BF16":
            bits = torch.from_numpy(raw.view(np.int16).astype(np.int32)) << 16
            t = bits.view(torch.float32)
        elif h["dtype"] == "F32":
            t = torch.from_numpy(raw.view(np.float32).copy())
        else:
            raise ValueError(f"{path}: {name} has dtype {h['dtype']}, expected BF16 or F32")
        out[name] = t.reshape(h["shape"])
    return out


def nf4_roundtrip(w, blocksize=64, double=False):
    """bitsandbytes quantize_4bit(nf4) then dequantize, vectorised over blocks (gen_nf4 has the
    element-wise rules: thresholds between the NF4 codes, 1/absmax scaling, the dynamic 8-bit map)."""
    flat = w.reshape(-1).float()
    n = flat.numel()
    nb = (n + blocksize - 1) // blocksize
    blocks = torch.zeros(nb * blocksize)
    blocks[:n] = flat
    blocks = blocks.view(nb, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks * (torch.ones(nb) / absmax)[:, None]
    codes = torch.zeros(nb, blocksize, dtype=torch.uint8)
    for t in gen_nf4.THRESH:  # count thresholds below: the NF4 code (NaN compares false → 0)
        codes += (scaled > t).to(torch.uint8)
    if double:
        absmax = double_quant_fast(absmax)
    return (gen_nf4.NF4[codes.long()] * absmax[:, None]).reshape(-1)[:n].reshape(w.shape)


def double_quant_fast(absmax, nested_block=256):
    a = absmax.numpy().astype(np.float32)
    n = a.size
    partial = np.zeros(256, dtype=np.float32)  # the GPU's summation order (see gen_nf4.double_quant)
    for c in range(0, n, 256):
        chunk = a[c:c + 256]
        partial[:chunk.size] += chunk
    h = 128
    while h > 0:
        partial[:h] += partial[h:2 * h]
        h //= 2
    offset = np.float32(partial[0] * np.float32(1.0 / n))
    centered = torch.from_numpy(a - offset)
    nn = (n + nested_block - 1) // nested_block
    padded = torch.zeros(nn * nested_block)
    padded[:n] = centered
    nested = padded.view(nn, nested_block).abs().amax(dim=1)
    code = gen_nf4.dynamic_map()
    per = torch.repeat_interleave(nested, nested_block)[:n]
    q = gen_nf4.quantize8(centered * (torch.ones(n) / per), code)
    q = torch.where(per == 0, torch.zeros_like(q), q)
    return (code[q.long()] * per) + torch.tensor(float(offset), dtype=torch.float32)


def forward(cfg, W, lora, scale, ids):
    H, Hq, Hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or H // Hq
    eps = cfg["rms_norm_eps"]
    N = ids.numel()
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    freqs = torch.arange(N).float()[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    causal = torch.ones(N, N, dtype=torch.bool).tril()

    def lin(x, l, m):
        name = f"model.layers.{l}.{'self_attn' if m in LINEARS[:4] else 'mlp'}.{m}"
        y = x @ W[f"{name}.weight"].T
        if f"{name}.bias" in W:
            y = y + W[f"{name}.bias"]
        if name in lora:
            A, B = lora[name]
            y = y + scale * ((x @ A.T) @ B.T)
        return y

    h = W["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        x = rmsnorm(h, W[f"{p}.input_layernorm.weight"], eps)
        q = lin(x, l, "q_proj").view(N, Hq, D)
        k = lin(x, l, "k_proj").view(N, Hkv, D)
        v = lin(x, l, "v_proj").view(N, Hkv, D)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(Hq // Hkv, dim=1)
        v = v.repeat_interleave(Hq // Hkv, dim=1)
        s = torch.einsum("nhd,mhd->hnm", q, k) * (D ** -0.5)
        s = s.masked_fill(~causal[None], float("-inf"))
        o = torch.einsum("hnm,mhd->nhd", torch.softmax(s, dim=-1), v).reshape(N, Hq * D)
        h = h + lin(o, l, "o_proj")
        x = rmsnorm(h, W[f"{p}.post_attention_layernorm.weight"], eps)
        h = h + lin(torch.nn.functional.silu(lin(x, l, "gate_proj")) * lin(x, l, "up_proj"), l, "down_proj")
    h = rmsnorm(h, W["model.norm.weight"], eps)
    # tie_word_embeddings: the head IS the embedding (PreTrainedModel.tie_weights), whatever the file holds.
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    return h @ head.T


def main():
    model_dir, lora_path, batch_path, out_path = sys.argv[1:5]
    nf4, dq = "--nf4" in sys.argv, "--dq" in sys.argv
    cfg = json.load(open(f"{model_dir}/config.json"))
    batch = json.load(open(batch_path))
    t0 = time.time()
    W = read_safetensors(f"{model_dir}/model.safetensors")
    if nf4:
        for k in list(W):
            if any(f".{m}.weight" in k for m in LINEARS):
                W[k] = nf4_roundtrip(W[k], 64, dq)
    L = read_safetensors(lora_path)
    lora = {}
    for k, a in L.items():
        if k.endswith(".lora_A"):
            name = k[: -len(".lora_A")]
            lora[name] = (a.clone().requires_grad_(True), L[f"{name}.lora_B"].clone().requires_grad_(True))
    scale = batch["alpha"] / batch["rank"]
    ids = torch.tensor(batch["ids"], dtype=torch.long)
    labels = torch.tensor(batch["labels"], dtype=torch.long)
    t1 = time.time()
    logits = forward(cfg, W, lora, scale, ids)
    shifted = torch.full_like(labels, -100)
    shifted[:-1] = labels[1:]
    loss = torch.nn.functional.cross_entropy(logits, shifted, ignore_index=-100)
    loss.backward()
    step_s = time.time() - t1
    norms = {}
    for name, (A, B) in lora.items():
        norms[f"{name}.lora_A"] = float(A.grad.norm())
        norms[f"{name}.lora_B"] = float(B.grad.norm())
    greedy = []
    with torch.no_grad():
        seq = ids[: batch["decodePrompt"]].clone()
        for _ in range(batch["decodeNew"]):
            nxt = int(forward(cfg, W, lora, scale, seq)[-1].argmax())
            greedy.append(nxt)
            seq = torch.cat((seq, torch.tensor([nxt])))
    json.dump({"loss": float(loss), "gradNorms": norms, "greedy": greedy, "stepSeconds": step_s,
               "loadSeconds": t1 - t0}, open(out_path, "w"))


if __name__ == "__main__":
    main()
