"""Export checks in PyTorch (Debian's /usr/bin/python3, torch 1.13; no transformers / peft /
safetensors packages, so files are parsed by hand).

Two roles:
* `main()` (run by generate.py): the `sample_warpers` fixture — transformers' logits processors
  (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
  TopPLogitsWarper from src/transformers/generation/logits_process.py, written out here in torch)
  applied to random logits, for tests/unit/sample.test.ts.
* `python3 gen_export.py check --base DIR --adapter DIR --merged DIR --ids 1,2,3`: loads the base
  checkpoint, applies the PEFT adapter unmerged (y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ, peft
  tuners/lora/layer.py), loads our merged checkpoint (single file or shards + index), checks the
  files against transformers' layout, recomputes every merged tensor as
  `(W.float() + s·B@A).to(dtype)` and runs an explicit Llama/Qwen2/Qwen3/SmolLM3/Phi-3 forward on
  both (Phi-3: fused qkv_proj / gate_up_proj merged as one linear each, LongRoPE, partial rotary). Prints one
  JSON object; exits 1 when a structural check fails.
"""
import argparse
import json
import math
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# ---------------------------------------------------------------------------------------------
# sampling fixture


def repetition_penalty(scores, ids, penalty):
    score = torch.gather(scores, 1, ids)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return scores.scatter(1, ids, score)


def top_k(scores, k, min_keep=1):
    k = min(max(k, min_keep), scores.size(-1))
    remove = scores < torch.topk(scores, k)[0][..., -1, None]
    return scores.masked_fill(remove, -float("inf"))


def top_p(scores, p, min_keep=1):
    sorted_logits, sorted_idx = torch.sort(scores, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= (1 - p)
    remove_sorted[..., -min_keep:] = 0
    remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
    return scores.masked_fill(remove, -float("inf"))


def warp(logits, history, o):
    s = logits.clone()
    if o["repetition_penalty"] != 1.0:
        s = repetition_penalty(s, history, o["repetition_penalty"])
    if not o["do_sample"]:
        return s
    if o["temperature"] != 1.0:
        s = s / o["temperature"]
    if o["top_k"] > 0:
        s = top_k(s, o["top_k"])
    if o["top_p"] < 1.0:
        s = top_p(s, o["top_p"])
    return s


def main():
    import common

    g = common.seed(4242)
    V = 97
    cases = [
        {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9, "repetition_penalty": 1.1},
        {"do_sample": True, "temperature": 1.3, "top_k": 0, "top_p": 0.5, "repetition_penalty": 1.0},
        {"do_sample": True, "temperature": 1.0, "top_k": 5, "top_p": 1.0, "repetition_penalty": 1.5},
        {"do_sample": True, "temperature": 0.95, "top_k": 50, "top_p": 0.7, "repetition_penalty": 1.0},
        {"do_sample": False, "temperature": 0.95, "top_k": 50, "top_p": 0.7, "repetition_penalty": 1.2},
        {"do_sample": True, "temperature": 0.5, "top_k": 0, "top_p": 0.99, "repetition_penalty": 0.8},
    ]
    logits = torch.randn(len(cases), V, generator=g) * 3
    # distinct history ids per row (gather/scatter with repeated ids would apply the penalty once too)
    history = torch.stack([torch.randperm(V, generator=g)[:12] for _ in cases])
    warped = torch.stack([warp(logits[i : i + 1], history[i : i + 1], o)[0] for i, o in enumerate(cases)])
    return {
        "sample_warpers": common.fixture(
            "transformers logits_process.py RepetitionPenalty/Temperature/TopK/TopP in torch",
            {"cases": cases, "vocab": V},
            {"logits": logits, "history": history.to(torch.int32), "warped": warped},
        )
    }


# ---------------------------------------------------------------------------------------------
# safetensors by hand

ST_DTYPES = {"F32": (torch.float32, 4), "BF16": (torch.bfloat16, 2), "F16": (torch.float16, 2)}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None)
    base = 8 + n
    out = {}
    end_max = 0
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt, size = ST_DTYPES[info["dtype"]]
        numel = 1
        for d in info["shape"]:
            numel *= d
        assert e - b == numel * size, f"{path}: {name}: {e - b} bytes for {info['shape']} {info['dtype']}"
        buf = bytearray(data[base + b : base + e])
        if dt == torch.bfloat16:
            t = torch.frombuffer(buf, dtype=torch.int16).view(torch.bfloat16)
        else:
            t = torch.frombuffer(buf, dtype=dt)
        out[name] = t.reshape(info["shape"]).clone()
        end_max = max(end_max, e)
    assert base + end_max == len(data), f"{path}: {len(data) - base - end_max} trailing bytes"
    return out, meta, header


def load_checkpoint(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    problems = []
    if os.path.exists(idx):
        index = json.load(open(idx))
        files = sorted(set(index["weight_map"].values()))
        tensors = {}
        total = 0
        for f in files:
            t, meta, header = read_safetensors(os.path.join(d, f))
            if meta != {"format": "pt"}:
                problems.append(f"{f}: __metadata__ {meta}")
            for k, v in t.items():
                if index["weight_map"].get(k) != f:
                    problems.append(f"{k} is in {f} but the index says {index['weight_map'].get(k)}")
                total += v.numel() * v.element_size()
            tensors.update(t)
        if set(tensors) != set(index["weight_map"]):
            problems.append("index weight_map and shard contents differ")
        if index["metadata"]["total_size"] != total:
            problems.append(f"index total_size {index['metadata']['total_size']} != {total}")
        return tensors, files, problems
    tensors, meta, _ = read_safetensors(os.path.join(d, "model.safetensors"))
    if meta != {"format": "pt"}:
        problems.append(f"model.safetensors: __metadata__ {meta}")
    return tensors, ["model.safetensors"], problems


# ---------------------------------------------------------------------------------------------
# explicit decoder forward (transformers modeling_llama.py / modeling_qwen2.py), float64

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def uses_rope(cfg, l):
    """configuration_smollm3.py: no_rope_layers (1 = RoPE), else every no_rope_layer_interval-th
    layer is NoPE; every other model ropes every layer."""
    if cfg.get("model_type") != "smollm3":
        return True
    rope = cfg.get("no_rope_layers") or [int((i + 1) % cfg.get("no_rope_layer_interval", 4) != 0)
                                         for i in range(cfg["num_hidden_layers"])]
    return bool(rope[l])


def rope_tables(cfg, hd, T):
    """cos/sin [T, rotary dim] (float64) as modeling_rope_utils.py builds them for a T-token pass:
    default RoPE, or LongRoPE (modeling_phi3.py): 1 / (ext · θ^(2i/dim)) with the long factors
    once T exceeds original_max_position_embeddings, cos/sin times the attention factor;
    dim = int(head_dim · partial_rotary_factor)."""
    theta = cfg.get("rope_theta", 10000.0)
    dim = int(hd * cfg.get("partial_rotary_factor", 1.0))
    shape = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    rs = cfg.get("rope_scaling") or {}
    scaling = 1.0
    if rs.get("rope_type", rs.get("type")) in ("longrope", "su"):
        orig = cfg.get("original_max_position_embeddings", 4096)
        ext = torch.tensor(rs["long_factor"] if T > orig else rs["short_factor"], dtype=torch.float32)
        inv = 1.0 / (ext * theta ** shape)
        factor = rs.get("factor") or cfg["max_position_embeddings"] / orig
        scaling = rs.get("attention_factor") or (1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(orig)))
    else:
        inv = 1.0 / (theta ** shape)
    freqs = torch.outer(torch.arange(T).float(), inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().double() * scaling, emb.sin().double() * scaling


def gemma_logits(cfg, W, ids, lora):
    """Gemma 3 / Gemma 2 (modeling_gemma3.py / modeling_gemma2.py) through gen_engine.gemma_forward
    on one sequence: (1 + w) norms, √hidden embeddings, q/k norms, per-layer windows and RoPE
    bases, soft-capping, sandwich norms, GeGLU."""
    import gen_engine
    T = len(ids)
    scale = next(iter(lora.values()))[2] if lora else 0.0
    pairs = {k: (A, B) for k, (A, B, _) in lora.items()} if lora else None
    return gen_engine.gemma_forward(cfg, W, pairs, scale, torch.tensor(ids), torch.arange(T),
                                    torch.zeros(T, dtype=torch.long), lambda h: h)


def forward(cfg, W, ids, lora=None):
    """W: name → float64 tensor. lora: module name → (A, B, scale), applied unmerged."""
    if cfg.get("model_type") in ("gemma3_text", "gemma2"):
        return gemma_logits(cfg, W, ids, lora)
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or H // nh
    eps = cfg.get("rms_norm_eps", 1e-6)
    T = len(ids)

    def lin(x, name, bias=True):
        y = x @ W[name + ".weight"].T
        if bias and (name + ".bias") in W:
            y = y + W[name + ".bias"]
        if lora and name in lora:
            A, B, s = lora[name]
            y = y + s * ((x @ A.T) @ B.T)
        return y

    cos, sin = rope_tables(cfg, hd, T)
    R = cos.shape[-1]

    def rope(x):  # modeling_phi3.py apply_rotary_pos_emb: rotate x[..., :R], pass the rest
        xr = x[..., :R]
        return torch.cat([xr * cos + rotate_half(xr) * sin, x[..., R:]], dim=-1)

    phi3 = cfg.get("model_type") == "phi3"
    h = W["model.embed_tokens.weight"][torch.tensor(ids)]
    mask = torch.full((T, T), -float("inf"), dtype=torch.float64).triu(1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        x = rms(h, W[p + "input_layernorm.weight"], eps)
        if phi3:  # modeling_phi3.py: qkv_proj sliced into q | k | v
            q, k, v = lin(x, p + "self_attn.qkv_proj").split([nh * hd, nkv * hd, nkv * hd], dim=-1)
            q, k, v = (t.reshape(T, -1, hd).transpose(0, 1) for t in (q, k, v))
        else:
            q = lin(x, p + "self_attn.q_proj").view(T, nh, hd).transpose(0, 1)
            k = lin(x, p + "self_attn.k_proj").view(T, nkv, hd).transpose(0, 1)
            v = lin(x, p + "self_attn.v_proj").view(T, nkv, hd).transpose(0, 1)
        if (p + "self_attn.q_norm.weight") in W:
            q = rms(q, W[p + "self_attn.q_norm.weight"], eps)
            k = rms(k, W[p + "self_attn.k_norm.weight"], eps)
        if uses_rope(cfg, l):
            q = rope(q)
            k = rope(k)
        k = k.repeat_interleave(nh // nkv, dim=0)
        v = v.repeat_interleave(nh // nkv, dim=0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, dim=-1)
        o = (att @ v).transpose(0, 1).reshape(T, nh * hd)
        h = h + lin(o, p + "self_attn.o_proj")
        x = rms(h, W[p + "post_attention_layernorm.weight"], eps)
        if phi3:  # Phi3MLP: gate, up = gate_up_proj(x).chunk(2)
            g, u = lin(x, p + "mlp.gate_up_proj").chunk(2, dim=-1)
        else:
            g = lin(x, p + "mlp.gate_proj")
            u = lin(x, p + "mlp.up_proj")
        h = h + lin(torch.nn.functional.silu(g) * u, p + "mlp.down_proj")
    h = rms(h, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else W["lm_head.weight"]
    return h @ head.T


def check(args):
    cfg = json.load(open(os.path.join(args.base, "config.json")))
    base, _files, base_problems = load_checkpoint(args.base)
    W = {k: v.double() for k, v in base.items()}
    acfg = json.load(open(os.path.join(args.adapter, "adapter_config.json")))
    ad, ameta, _ = read_safetensors(os.path.join(args.adapter, "adapter_model.safetensors"))
    problems = list(base_problems)
    for k in ("r", "lora_alpha", "target_modules", "peft_type", "task_type", "use_rslora", "bias"):
        if k not in acfg:
            problems.append(f"adapter_config.json lacks {k}")
    if acfg.get("peft_type") != "LORA" or acfg.get("task_type") != "CAUSAL_LM":
        problems.append(f"adapter_config.json peft_type/task_type {acfg.get('peft_type')}/{acfg.get('task_type')}")
    r, alpha = acfg["r"], acfg["lora_alpha"]
    scale = alpha / math.sqrt(r) if acfg.get("use_rslora") else alpha / r
    lora = {}
    for key, t in ad.items():
        if not key.startswith("base_model.model.") or not (key.endswith(".lora_A.weight") or key.endswith(".lora_B.weight")):
            problems.append(f"adapter key {key} is not a PEFT LoRA key")
            continue
        mod = key[len("base_model.model.") : -len(".lora_A.weight")]
        if not any(mod.endswith(t) for t in acfg["target_modules"]):
            problems.append(f"{mod} is not covered by target_modules {acfg['target_modules']}")
        e = lora.setdefault(mod, [None, None, scale])
        e[0 if key.endswith(".lora_A.weight") else 1] = t.double()
        if t.dtype != torch.float32:
            problems.append(f"{key} is {t.dtype}, PEFT saves float32 adapters here")
    for mod, (A, B, _) in lora.items():
        if A is None or B is None:
            problems.append(f"{mod}: lora_A or lora_B missing")
        elif A.shape[0] != r or B.shape[1] != r or mod + ".weight" not in W or tuple(W[mod + ".weight"].shape) != (B.shape[0], A.shape[1]):
            problems.append(f"{mod}: shapes A{tuple(A.shape)} B{tuple(B.shape)} do not fit r={r} and the base weight")

    merged, merged_files, merged_problems = load_checkpoint(args.merged)
    problems += merged_problems
    mcfg = json.load(open(os.path.join(args.merged, "config.json")))
    dtype_name = mcfg.get("torch_dtype")
    want = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype_name)
    if want is None:
        problems.append(f"merged config.json torch_dtype {dtype_name!r}")
        want = torch.float32
    for k in ("architectures", "hidden_size", "num_hidden_layers", "vocab_size", "tie_word_embeddings"):
        if mcfg.get(k) != cfg.get(k):
            problems.append(f"merged config.json {k} {mcfg.get(k)!r} != base {cfg.get(k)!r}")
    if not os.path.exists(os.path.join(args.merged, "generation_config.json")):
        problems.append("merged export lacks generation_config.json")
    expected_names = set(base) - ({"lm_head.weight"} if cfg.get("tie_word_embeddings") else set())
    if set(merged) != expected_names:
        problems.append(f"merged tensors differ from the base: missing {sorted(expected_names - set(merged))}, extra {sorted(set(merged) - expected_names)}")

    # every merged tensor against torch's own merge: (W.float() + s·B@A).to(dtype)
    worst_ulps = 0
    off_elems = 0
    max_abs_w = 0.0
    for name, t in merged.items():
        if t.dtype != want:
            problems.append(f"{name} is {t.dtype}, config says {dtype_name}")
            continue
        src = base[name].float()
        mod = name[: -len(".weight")]
        if mod in lora and lora[mod][0] is not None:
            A, B, s = lora[mod]
            src = src + (s * (B.float() @ A.float()))
        ref = src.to(want)
        if ref.shape != t.shape:
            problems.append(f"{name}: shape {tuple(t.shape)} != {tuple(ref.shape)}")
            continue
        diff = (t.float() - ref.float()).abs()
        max_abs_w = max(max_abs_w, float(diff.max()) if diff.numel() else 0.0)
        if want != torch.float32:
            bits = (t.view(torch.int16).int() - ref.view(torch.int16).int()).abs()
            worst_ulps = max(worst_ulps, int(bits.max()) if bits.numel() else 0)
            off_elems += int((bits != 0).sum())

    ids = [int(x) for x in args.ids.split(",")]
    base_logits = forward(cfg, W, ids)
    peft_logits = forward(cfg, W, ids, {k: tuple(v) for k, v in lora.items()})
    WM = {k: v.double() for k, v in merged.items()}
    merged_logits = forward(cfg, WM, ids)
    # the same forward on torch's own merge in the export dtype: isolates our merge from rounding
    WR = {}
    for name, t in base.items():
        src = t.float()
        mod = name[: -len(".weight")]
        if mod in lora and lora[mod][0] is not None:
            A, B, s = lora[mod]
            src = src + (s * (B.float() @ A.float()))
        WR[name] = src.to(want).double()
    ref_merged_logits = forward(cfg, WR, ids)

    def rel(a, b):
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))

    out = {
        "problems": problems,
        "merged_files": merged_files,
        "dtype": dtype_name,
        "adapter_modules": len(lora),
        "scale": scale,
        "merged_vs_torch_merge_max_abs": max_abs_w,
        "merged_vs_torch_merge_worst_ulps": worst_ulps,
        "merged_vs_torch_merge_elements_off": off_elems,
        "rel_merged_vs_peft": rel(merged_logits, peft_logits),
        "rel_merged_vs_torch_merged": rel(merged_logits, ref_merged_logits),
        "rel_adapter_effect": rel(peft_logits, base_logits),
        "peft_logits_last": [float(x) for x in peft_logits[-1]],
        "base_logits_last": [float(x) for x in base_logits[-1]],
    }
    print(json.dumps(out))
    return 1 if problems else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["check"])
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--merged", required=True)
    ap.add_argument("--ids", required=True)
    torch.set_num_threads(1)
    sys.exit(check(ap.parse_args()))
