"""Whole-model fixtures for the engine: a tiny Llama and a tiny Qwen2 written out explicitly from
transformers' modeling_llama.py / modeling_qwen2.py (pre-norm decoder, RMSNorm, half-split RoPE,
GQA causal attention, SwiGLU MLP, q/k/v biases for Qwen2, tied embeddings), PEFT LoRA
(peft tuners/lora/layer.py: y = xW^T + b + s*(xA^T)B^T), the HF Trainer's loss normalisation over
an accumulation window, clip_grad_norm_, torch.optim.AdamW and get_cosine_schedule_with_warmup
(transformers optimization.py). QLoRA bases are dequantized with the bitsandbytes rules of
gen_nf4.py. Math in float64 (the truth); weights are exactly the f32 / bf16 values the engine gets.
"""
import math

import torch

import common
import gen_nf4

D64 = torch.float64
LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def llama_config():
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 300,
            "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
            "hidden_act": "silu", "torch_dtype": "float32"}


def mistral_config():
    # configuration_mistral.py: Llama-shaped, bias-free, with a sliding window on every layer
    # (modeling_mistral.py create_sliding_window_causal_mask); window 3 is far shorter than the rows.
    return {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "vocab_size": 300, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "sliding_window": 3, "tie_word_embeddings": False, "hidden_act": "silu",
            "torch_dtype": "float32"}


def qwen2_config():
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
            "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
            "hidden_act": "silu", "torch_dtype": "bfloat16"}


def qwen3_config():
    return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24, "vocab_size": 300,
            "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
            "attention_bias": False, "hidden_act": "silu", "torch_dtype": "float32"}


def smollm3_config():
    # configuration_smollm3.py: without no_rope_layers, every no_rope_layer_interval-th layer is NoPE;
    # interval 2 over 4 layers makes layers 1 and 3 NoPE, so gradients cross a NoPE layer into roped ones.
    return {"architectures": ["SmolLM3ForCausalLM"], "model_type": "smollm3", "hidden_size": 64,
            "intermediate_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 300, "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 2000000.0,
            "no_rope_layer_interval": 2, "tie_word_embeddings": True, "attention_bias": False,
            "hidden_act": "silu", "torch_dtype": "float32"}


def phi3_config():
    # configuration_phi3.py fields with every Phi-3 feature kept small: fused qkv_proj / gate_up_proj
    # (bias-free), LongRoPE (short and long factors, original_max_position_embeddings 8 so a
    # 10-token pass takes the long factors and a 6-token one the short), partial rotary 0.625 of
    # head_dim 16 = 10 rotated dims (an odd number, 5, of rotated pairs), rms_norm_eps 1e-5.
    return {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
            "max_position_embeddings": 32, "original_max_position_embeddings": 8, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "partial_rotary_factor": 0.625,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.05, 1.2, 1.5, 2.0],
                             "long_factor": [1.1, 1.9, 3.3, 5.0, 7.5]},
            "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "float32"}


ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj")


def uses_rope(cfg, l):
    """SmolLM3Config.no_rope_layers (1 = RoPE); every other model ropes every layer."""
    if cfg["model_type"] != "smollm3":
        return True
    rope = cfg.get("no_rope_layers") or [int((i + 1) % cfg.get("no_rope_layer_interval", 4) != 0)
                                         for i in range(cfg["num_hidden_layers"])]
    return bool(rope[l])


def shapes(cfg):
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    D = cfg.get("head_dim", H // cfg["num_attention_heads"])
    q, kv = cfg["num_attention_heads"] * D, cfg["num_key_value_heads"] * D
    if cfg["model_type"] == "phi3":  # modeling_phi3.py Phi3Attention.qkv_proj, Phi3MLP.gate_up_proj
        return {"qkv_proj": (q + 2 * kv, H), "o_proj": (H, q), "gate_up_proj": (2 * I, H), "down_proj": (H, I)}
    return {"q_proj": (q, H), "k_proj": (kv, H), "v_proj": (kv, H), "o_proj": (H, q),
            "gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}


def random_weights(cfg, g, bias, qk_norm=False):
    """Random weights (f32) under their HF names; std chosen so logits are far from uniform."""
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    w = {"model.embed_tokens.weight": torch.randn(V, H, generator=g) * 0.7}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        w[f"{p}.input_layernorm.weight"] = 1 + 0.2 * torch.randn(H, generator=g)
        w[f"{p}.post_attention_layernorm.weight"] = 1 + 0.2 * torch.randn(H, generator=g)
        if qk_norm:
            D = cfg["head_dim"]
            w[f"{p}.self_attn.q_norm.weight"] = 1 + 0.2 * torch.randn(D, generator=g)
            w[f"{p}.self_attn.k_norm.weight"] = 1 + 0.2 * torch.randn(D, generator=g)
        for m, (o, i) in shapes(cfg).items():
            grp = "self_attn" if m in ATTENTION else "mlp"
            w[f"{p}.{grp}.{m}.weight"] = torch.randn(o, i, generator=g) * (1.2 / math.sqrt(i))
            if bias and m in ("q_proj", "k_proj", "v_proj"):
                w[f"{p}.{grp}.{m}.bias"] = 0.3 * torch.randn(o, generator=g)
    w["model.norm.weight"] = 1 + 0.2 * torch.randn(H, generator=g)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = torch.randn(V, H, generator=g) * (2.0 / math.sqrt(H))
    return w


def module_name(l, m):
    return f"model.layers.{l}.{'self_attn' if m in ATTENTION else 'mlp'}.{m}"


def rotary_dim(cfg):
    """modeling_rope_utils: dim = int(head_dim * partial_rotary_factor)."""
    D = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    return int(D * cfg.get("partial_rotary_factor", 1.0))


def longrope(cfg):
    rs = cfg.get("rope_scaling")
    return rs if rs and rs.get("rope_type", rs.get("type")) == "longrope" else None


def inv_freq(cfg, seq_len=None):
    R = rotary_dim(cfg)
    shape = torch.arange(0, R, 2, dtype=torch.int64).float() / R
    rs = longrope(cfg)
    if rs is not None:
        # modeling_rope_utils._compute_longrope_parameters: long factors when seq_len (the
        # largest position + 1, dynamic_rope_update) exceeds original_max_position_embeddings.
        long = seq_len is not None and seq_len > cfg["original_max_position_embeddings"]
        ext = torch.tensor(rs["long_factor"] if long else rs["short_factor"], dtype=torch.float32)
        return 1.0 / (ext * cfg["rope_theta"] ** shape)
    # modeling_rope_utils._compute_default_rope_parameters, in f32 like transformers.
    return 1.0 / (cfg["rope_theta"] ** shape)


def attention_scaling(cfg):
    """_compute_longrope_parameters: attention_factor, else sqrt(1 + ln(factor)/ln(original)) with
    factor = max_position_embeddings / original_max_position_embeddings; 1 for the other RoPE types."""
    rs = longrope(cfg)
    if rs is None:
        return 1.0
    if rs.get("attention_factor") is not None:
        return rs["attention_factor"]
    orig = cfg["original_max_position_embeddings"]
    factor = rs.get("factor") or cfg["max_position_embeddings"] / orig
    return 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(orig))


def rmsnorm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(cfg, W, lora, scale, ids, pos, seg, keep=None):
    """Token-major forward over N tokens; seg[n] < 0 marks padding. Returns logits [N, V] (f64).
    keep(h), when given, is applied to the residual stream at each layer boundary (h0 .. hL)."""
    keep = keep or (lambda h: h)
    if cfg["model_type"] in GEMMA_TYPES:
        return gemma_forward(cfg, W, lora, scale, ids, pos, seg, keep)
    H = cfg["hidden_size"]
    Hq, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim", H // Hq)
    eps = cfg["rms_norm_eps"]
    N = ids.numel()
    freqs = pos.to(D64)[:, None] * inv_freq(cfg, int(pos.max()) + 1).to(D64)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None, :] * attention_scaling(cfg), emb.sin()[:, None, :] * attention_scaling(cfg)
    R = rotary_dim(cfg)

    def rope(x):  # modeling_phi3.py apply_rotary_pos_emb: rotate x[..., :R], pass the rest
        xr = x[..., :R]
        return torch.cat((xr * cos + rotate_half(xr) * sin, x[..., R:]), dim=-1)
    n_idx = torch.arange(N)
    visible = (n_idx[None, :] <= n_idx[:, None]) & (seg[None, :] == seg[:, None]) & (seg[:, None] >= 0)
    # masking_utils sliding_window_overlay: q - k < window (rows are contiguous); modeling_phi3.py
    # masks the same way whenever config.sliding_window is set (Phi-3-mini-4k: 2047).
    if cfg["model_type"] == "mistral" or (cfg["model_type"] == "phi3" and cfg.get("sliding_window") is not None):
        visible = visible & ((n_idx[:, None] - n_idx[None, :]) < cfg["sliding_window"])
    visible = visible | torch.eye(N, dtype=torch.bool)  # padding rows: keep softmax finite, zeroed below
    pad = (seg < 0)[:, None]

    def lin(x, l, m):
        name = module_name(l, m)
        y = x @ W[f"{name}.weight"].T
        if f"{name}.bias" in W:
            y = y + W[f"{name}.bias"]
        if lora is not None and name in lora:
            A, B = lora[name]
            y = y + scale * ((x @ A.T) @ B.T)
        return y

    h = keep(W["model.embed_tokens.weight"][ids])
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        x = rmsnorm(h, W[f"{p}.input_layernorm.weight"], eps)
        if cfg["model_type"] == "phi3":  # modeling_phi3.py: one qkv_proj, sliced q | k | v
            q, k, v = lin(x, l, "qkv_proj").split([Hq * D, Hkv * D, Hkv * D], dim=-1)
            q, k, v = q.reshape(N, Hq, D), k.reshape(N, Hkv, D), v.reshape(N, Hkv, D)
        else:
            q = lin(x, l, "q_proj").view(N, Hq, D)
            k = lin(x, l, "k_proj").view(N, Hkv, D)
            v = lin(x, l, "v_proj").view(N, Hkv, D)
        if f"{p}.self_attn.q_norm.weight" in W:  # Qwen3: RMSNorm over head_dim before RoPE
            q = rmsnorm(q, W[f"{p}.self_attn.q_norm.weight"], eps)
            k = rmsnorm(k, W[f"{p}.self_attn.k_norm.weight"], eps)
        if uses_rope(cfg, l):  # modeling_smollm3.py: NoPE layers skip apply_rotary_pos_emb
            q = rope(q)
            k = rope(k)
        rep = Hq // Hkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = torch.einsum("nhd,mhd->hnm", q, k) * (D ** -0.5)
        s = s.masked_fill(~visible[None], float("-inf"))
        o = torch.einsum("hnm,mhd->nhd", torch.softmax(s, dim=-1), v).reshape(N, Hq * D)
        o = o.masked_fill(pad, 0.0)
        h = h + lin(o, l, "o_proj")
        x = rmsnorm(h, W[f"{p}.post_attention_layernorm.weight"], eps)
        if cfg["model_type"] == "phi3":  # Phi3MLP: gate, up = gate_up_proj(x).chunk(2); up * silu(gate)
            gate, up = lin(x, l, "gate_up_proj").chunk(2, dim=-1)
            a = up * torch.nn.functional.silu(gate)
        else:
            a = torch.nn.functional.silu(lin(x, l, "gate_proj")) * lin(x, l, "up_proj")
        h = keep(h + lin(a, l, "down_proj"))
    h = rmsnorm(h, W["model.norm.weight"], eps)
    head = W["lm_head.weight"] if "lm_head.weight" in W else W["model.embed_tokens.weight"]
    return h @ head.T


# ---------------------------------------------------------------------------------------------
# Gemma 3 (modeling_gemma3.py, configuration_gemma3.py) and Gemma 2 (modeling_gemma2.py,
# configuration_gemma2.py)

GEMMA_TYPES = ("gemma3_text", "gemma2")


def gemma3_config():
    """Gemma3TextConfig with every feature in a tiny shape: 3 layers (sliding, global, sliding),
    a window of 4 keys under 9-token rows, local RoPE base 100 vs global 10000 with linear scaling
    2 (rope_scaling applies to global layers only), query_pre_attn_scalar 24 ≠ head_dim 16,
    hidden 48 (√48 is not an f32 integer) ≠ heads·head_dim 64, q/k norms, tied embeddings."""
    return {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 48,
            "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "query_pre_attn_scalar": 24, "vocab_size": 300, "max_position_embeddings": 128,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_local_base_freq": 100.0,
            "rope_scaling": {"rope_type": "linear", "factor": 2.0}, "sliding_window": 4,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
            "hidden_activation": "gelu_pytorch_tanh", "final_logit_softcapping": None,
            "attn_logit_softcapping": None, "tie_word_embeddings": True, "torch_dtype": "float32"}


def gemma2_config():
    """Gemma2Config in a tiny shape: layer 0 slides (window 4), layer 1 is global (the default
    alternation), attention soft-capping 3 and final-logit soft-capping 5 (both bend the values
    these weights produce), query_pre_attn_scalar 20, bf16 weights (√48 → bf16 6.9375)."""
    return {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 48,
            "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "query_pre_attn_scalar": 20, "vocab_size": 300, "max_position_embeddings": 128,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "sliding_window": 4,
            "attn_logit_softcapping": 3.0, "final_logit_softcapping": 5.0,
            "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
            "tie_word_embeddings": True, "torch_dtype": "bfloat16"}


def gemma_sliding_layers(cfg):
    """layer_types, else Gemma 3's sliding_window_pattern (default 6) or Gemma 2's alternation."""
    L = cfg["num_hidden_layers"]
    if cfg.get("layer_types"):
        return [l for l in range(L) if cfg["layer_types"][l] == "sliding_attention"]
    pattern = 2 if cfg["model_type"] == "gemma2" else cfg.get("sliding_window_pattern", 6)
    return [l for l in range(L) if (l + 1) % pattern != 0]


def gemma_weights(cfg, g):
    """Random weights under Gemma's names; norm weights centred on 0 (the scale is 1 + w)."""
    H, V, D = cfg["hidden_size"], cfg["vocab_size"], cfg["head_dim"]
    w = {"model.embed_tokens.weight": torch.randn(V, H, generator=g) * 0.5}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            w[f"{p}.{n}.weight"] = 0.2 * torch.randn(H, generator=g)
        if cfg["model_type"] == "gemma3_text":
            w[f"{p}.self_attn.q_norm.weight"] = 0.2 * torch.randn(D, generator=g)
            w[f"{p}.self_attn.k_norm.weight"] = 0.2 * torch.randn(D, generator=g)
        for m, (o, i) in shapes(cfg).items():
            grp = "self_attn" if m in ATTENTION else "mlp"
            w[f"{p}.{grp}.{m}.weight"] = torch.randn(o, i, generator=g) * (1.2 / math.sqrt(i))
    w["model.norm.weight"] = 0.2 * torch.randn(H, generator=g)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = torch.randn(V, H, generator=g) * (2.0 / math.sqrt(H))
    return w


def gemma_forward(cfg, W, lora, scale, ids, pos, seg, keep):
    """Gemma3ForCausalLM / Gemma2ForCausalLM token-major in f64 (same conventions as forward):
    Gemma3RMSNorm x·rsqrt(mean x² + eps)·(1 + w); embeddings times hidden_size**0.5 cast to the
    weights' dtype (Gemma3TextScaledWordEmbedding / Gemma2Model); q/k norms (Gemma 3); RoPE with
    rope_local_base_freq on sliding layers and rope_theta (+ rope_scaling) on global ones (Gemma 3);
    scores · query_pre_attn_scalar**-0.5, then attn_logit_softcapping (eager_attention_forward:
    softcap·tanh(s / softcap)) before the mask; the sliding mask keeps keys with q − k < window
    (masking_utils sliding_window_overlay); post_attention_layernorm on o_proj's output before the
    residual add, pre_feedforward_layernorm → gelu_pytorch_tanh(gate)·up → down →
    post_feedforward_layernorm; final norm, tied head, final_logit_softcapping."""
    H, D = cfg["hidden_size"], cfg["head_dim"]
    Hq, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    eps = cfg["rms_norm_eps"]
    N = ids.numel()
    gemma3 = cfg["model_type"] == "gemma3_text"
    sliding = set(gemma_sliding_layers(cfg))

    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + w)

    def tables(theta, rope_scaling):
        inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
        if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type")) == "linear":
            inv = inv / rope_scaling["factor"]  # _compute_linear_scaling_rope_parameters, in f32
        freqs = pos.to(D64)[:, None] * inv.to(D64)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[:, None, :], emb.sin()[:, None, :]
    rope_global = tables(cfg["rope_theta"], cfg.get("rope_scaling"))
    rope_local = tables(cfg["rope_local_base_freq"], None) if gemma3 else rope_global

    n_idx = torch.arange(N)
    causal = (n_idx[None, :] <= n_idx[:, None]) & (seg[None, :] == seg[:, None]) & (seg[:, None] >= 0)
    near = (n_idx[:, None] - n_idx[None, :]) < cfg["sliding_window"]
    eye = torch.eye(N, dtype=torch.bool)  # padding rows: keep softmax finite, zeroed below
    pad = (seg < 0)[:, None]

    def lin(x, l, m):
        name = module_name(l, m)
        y = x @ W[f"{name}.weight"].T
        if lora is not None and name in lora:
            A, B = lora[name]
            y = y + scale * ((x @ A.T) @ B.T)
        return y

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg["torch_dtype"]]
    normalizer = float(torch.tensor(H ** 0.5, dtype=dtype))
    h = keep(W["model.embed_tokens.weight"][ids] * normalizer)
    attn_cap = cfg.get("attn_logit_softcapping")
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        x = norm(h, W[f"{p}.input_layernorm.weight"])
        q = lin(x, l, "q_proj").view(N, Hq, D)
        k = lin(x, l, "k_proj").view(N, Hkv, D)
        v = lin(x, l, "v_proj").view(N, Hkv, D)
        if gemma3:
            q = norm(q, W[f"{p}.self_attn.q_norm.weight"])
            k = norm(k, W[f"{p}.self_attn.k_norm.weight"])
        cos, sin = rope_local if l in sliding else rope_global
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = Hq // Hkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = torch.einsum("nhd,mhd->hnm", q, k) * (cfg["query_pre_attn_scalar"] ** -0.5)
        if attn_cap:
            s = torch.tanh(s / attn_cap) * attn_cap
        visible = (causal & near if l in sliding else causal) | eye
        s = s.masked_fill(~visible[None], float("-inf"))
        o = torch.einsum("hnm,mhd->nhd", torch.softmax(s, dim=-1), v).reshape(N, Hq * D)
        o = o.masked_fill(pad, 0.0)
        h = h + norm(lin(o, l, "o_proj"), W[f"{p}.post_attention_layernorm.weight"])
        x = norm(h, W[f"{p}.pre_feedforward_layernorm.weight"])
        a = torch.nn.functional.gelu(lin(x, l, "gate_proj"), approximate="tanh") * lin(x, l, "up_proj")
        h = keep(h + norm(lin(a, l, "down_proj"), W[f"{p}.post_feedforward_layernorm.weight"]))
    h = norm(h, W["model.norm.weight"])
    head = W["lm_head.weight"] if "lm_head.weight" in W else W["model.embed_tokens.weight"]
    logits = h @ head.T
    cap = cfg.get("final_logit_softcapping")
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def gemma3_case():
    """LoRA and full fine-tuning gradients over 2 rows of 9 tokens (row 1: 7 real), past the window."""
    g = common.seed(2703)
    cfg = gemma3_config()
    W32 = gemma_weights(cfg, g)
    B, T = 2, 9
    lengths = [9, 7]
    ids = torch.randint(1, cfg["vocab_size"], (B * T,), generator=g)
    labels = ids.clone()
    labels[0:2] = -100
    for b, L in enumerate(lengths):
        ids[b * T + L:(b + 1) * T] = 0
        labels[b * T + L:(b + 1) * T] = -100
    pos = torch.arange(T).repeat(B)
    seg = segments_padded(lengths, T)
    t, meta = grad_case(cfg, W32, W32, g, ids, labels, pos, seg, B, T, full=True)
    return common.fixture("tests/reference/gen_engine.py gemma3_case", meta, t)


def gemma2_case():
    """LoRA gradients of a bf16 Gemma 2 (soft-capped attention and logits) over 2 rows of 9 tokens
    (row 1: 6 real), past the window of its sliding layer 0."""
    g = common.seed(2702)
    cfg = gemma2_config()
    Wbf = {k: v.to(torch.bfloat16) for k, v in gemma_weights(cfg, g).items()}  # what the checkpoint holds
    Wc = {k: v.float() for k, v in Wbf.items()}
    B, T = 2, 9
    lengths = [9, 6]
    ids = torch.randint(1, cfg["vocab_size"], (B * T,), generator=g)
    labels = ids.clone()
    labels[0:2] = -100
    for b, L in enumerate(lengths):
        ids[b * T + L:(b + 1) * T] = 0
        labels[b * T + L:(b + 1) * T] = -100
    pos = torch.arange(T).repeat(B)
    seg = segments_padded(lengths, T)
    t, meta = grad_case(cfg, Wbf, Wc, g, ids, labels, pos, seg, B, T, full=False)
    return common.fixture("tests/reference/gen_engine.py gemma2_case", meta, t)


def train_gemma2_case():
    cfg = gemma2_config()
    Wc = {k: v.to(torch.bfloat16).float() for k, v in gemma_weights(cfg, common.seed(2702)).items()}
    t, meta = train_run(cfg, Wc, common.seed(95), 20, LINEARS)
    return common.fixture("tests/reference/gen_engine.py train_gemma2_case", meta, t)


def train_gemma3_case():
    cfg = gemma3_config()
    W32 = gemma_weights(cfg, common.seed(2703))  # same weights as gemma3_case
    t, meta = train_run(cfg, W32, common.seed(96), 20, LINEARS)
    return common.fixture("tests/reference/gen_engine.py train_gemma3_case", meta, t)


def shift_labels(labels, B, T):
    lab = labels.view(B, T)
    out = torch.full((B, T), -100, dtype=torch.long)
    out[:, :-1] = lab[:, 1:]
    return out.reshape(-1)


def loss_sum(logits, shifted):
    valid = shifted != -100
    return torch.nn.functional.cross_entropy(logits[valid], shifted[valid], reduction="sum"), int(valid.sum())


def segments_padded(lengths, T):
    seg = torch.full((len(lengths) * T,), -1, dtype=torch.long)
    for b, L in enumerate(lengths):
        seg[b * T:b * T + L] = b
    return seg


def to64(W):
    return {k: v.to(D64) for k, v in W.items()}


def lora_init(cfg, g, r, nonzero_b):
    out = {}
    for l in range(cfg["num_hidden_layers"]):
        for m, (o, i) in shapes(cfg).items():
            bound = 1 / math.sqrt(i)
            A = (torch.rand(r, i, generator=g) * 2 - 1) * bound
            B = torch.randn(o, r, generator=g) * 0.2 if nonzero_b else torch.zeros(o, r)
            out[module_name(l, m)] = (A, B)
    return out


def grad_case(cfg, W32, Wcompute, g, ids, labels, pos, seg, B, T, full):
    """Logits, loss and LoRA (+ optionally all-weight) gradients of one batch."""
    r, alpha = 4, 8.0
    lora32 = lora_init(cfg, g, r, True)
    W = {k: v.clone().requires_grad_(full) for k, v in to64(Wcompute).items()}
    lora = {k: (A.to(D64).requires_grad_(True), Bm.to(D64).requires_grad_(True)) for k, (A, Bm) in lora32.items()}
    logits = forward(cfg, W, lora, alpha / r, ids, pos, seg)
    shifted = shift_labels(labels, B, T)
    s, count = loss_sum(logits, shifted)
    loss = s / count
    loss.backward()
    t = {"ids": ids.to(torch.int32), "labels": labels.to(torch.int32), "positions": pos.to(torch.int32),
         "segments": seg.to(torch.int32), "logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for k, v in W32.items():
        t[f"w:{k}"] = v
    for k, (A, Bm) in lora32.items():
        t[f"lora_A:{k}"] = A
        t[f"lora_B:{k}"] = Bm
        t[f"grad_A:{k}"] = lora[k][0].grad
        t[f"grad_B:{k}"] = lora[k][1].grad
    if full:
        for k, v in W.items():
            t[f"grad_w:{k}"] = v.grad
    meta = {"config": cfg, "B": B, "T": T, "rank": r, "alpha": alpha, "count": count}
    return t, meta


def llama_case():
    g = common.seed(1234)
    cfg = llama_config()
    W32 = random_weights(cfg, g, bias=False)
    B, T = 2, 9
    lengths = [9, 6]
    ids = torch.randint(1, cfg["vocab_size"], (B * T,), generator=g)
    labels = ids.clone()
    labels[0:3] = -100  # prompt of row 0
    labels[T:T + 2] = -100
    for b, L in enumerate(lengths):
        ids[b * T + L:(b + 1) * T] = 0
        labels[b * T + L:(b + 1) * T] = -100
    pos = torch.arange(T).repeat(B)
    seg = segments_padded(lengths, T)
    t, meta = grad_case(cfg, W32, W32, g, ids, labels, pos, seg, B, T, full=True)
    meta["lengths"] = lengths
    return common.fixture("tests/reference/gen_engine.py llama_case", meta, t)


def qwen2_case():
    g = common.seed(4321)
    cfg = qwen2_config()
    Wf = random_weights(cfg, g, bias=True)
    Wbf = {k: v.to(torch.bfloat16) for k, v in Wf.items()}  # what the checkpoint holds
    Wc = {k: v.float() for k, v in Wbf.items()}
    # One packed row of T = 12 holding examples of 5 and 4 tokens (positions restart) + 3 padding.
    B, T = 1, 12
    starts = [0, 5, 9]
    ids = torch.randint(1, cfg["vocab_size"], (T,), generator=g)
    ids[9:] = 0
    labels = ids.clone()
    labels[0:2] = -100
    labels[5:6] = -100
    labels[9:] = -100
    pos = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 0, 0])
    seg = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, -1, -1, -1])
    t, meta = grad_case(cfg, Wbf, Wc, g, ids, labels, pos, seg, B, T, full=False)
    meta["seqStarts"] = starts
    return common.fixture("tests/reference/gen_engine.py qwen2_case", meta, t)


def padded_lora_case(name, cfg, g, W32, B, T, lengths, prompt):
    """LoRA gradients on B rows of T tokens, row b real for lengths[b] tokens (the rest padding),
    the first `prompt` labels of row 0 masked."""
    ids = torch.randint(1, cfg["vocab_size"], (B * T,), generator=g)
    labels = ids.clone()
    labels[0:prompt] = -100
    for b, L in enumerate(lengths):
        ids[b * T + L:(b + 1) * T] = 0
        labels[b * T + L:(b + 1) * T] = -100
    pos = torch.arange(T).repeat(B)
    seg = segments_padded(lengths, T)
    t, meta = grad_case(cfg, W32, W32, g, ids, labels, pos, seg, B, T, full=False)
    return common.fixture(f"tests/reference/gen_engine.py {name}", meta, t)


def qwen3_case():
    g = common.seed(777)
    cfg = qwen3_config()
    W32 = random_weights(cfg, g, bias=False, qk_norm=True)
    return padded_lora_case("qwen3_case", cfg, g, W32, 2, 7, [7, 5], 2)


def mistral_case():
    g = common.seed(2468)
    cfg = mistral_config()
    W32 = random_weights(cfg, g, bias=False)
    return padded_lora_case("mistral_case", cfg, g, W32, 2, 9, [9, 7], 2)


def smollm3_case():
    g = common.seed(3333)
    cfg = smollm3_config()
    W32 = random_weights(cfg, g, bias=False)
    return padded_lora_case("smollm3_case", cfg, g, W32, 2, 8, [8, 6], 2)


PHI3_LINEARS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]


def phi3_case():
    """Phi-3 (modeling_phi3.py): LoRA and full fine-tuning gradients over a padded batch of 10-token
    rows (largest position 9 ≥ original 8: the long LongRoPE factors), plus the logits of row 0's
    first 6 tokens alone (a pass within the original length: the short factors)."""
    g = common.seed(3141)
    cfg = phi3_config()
    W32 = random_weights(cfg, g, bias=False)
    B, T = 2, 10
    lengths = [10, 7]
    ids = torch.randint(1, cfg["vocab_size"], (B * T,), generator=g)
    labels = ids.clone()
    labels[0:2] = -100
    for b, L in enumerate(lengths):
        ids[b * T + L:(b + 1) * T] = 0
        labels[b * T + L:(b + 1) * T] = -100
    pos = torch.arange(T).repeat(B)
    seg = segments_padded(lengths, T)
    t, meta = grad_case(cfg, W32, W32, g, ids, labels, pos, seg, B, T, full=True)
    lora = {k[len("lora_A:"):]: (t[k].to(D64), t["lora_B:" + k[len("lora_A:"):]].to(D64))
            for k in t if k.startswith("lora_A:")}
    short = 6
    with torch.no_grad():
        t["logits_short"] = forward(cfg, to64(W32), lora, meta["alpha"] / meta["rank"], ids[:short],
                                    torch.arange(short), torch.zeros(short, dtype=torch.long))
    meta["short"] = short
    return common.fixture("tests/reference/gen_engine.py phi3_case", meta, t)


# ---------------------------------------------------------------------------------------------
# Training runs


def cosine_lambda(s, warmup, total):
    # transformers get_cosine_schedule_with_warmup (num_cycles 0.5)
    if s < warmup:
        return s / max(1, warmup)
    progress = (s - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def make_examples(g, V, n, lo, hi):
    ex = []
    for _ in range(n):
        L = int(torch.randint(lo, hi + 1, (1,), generator=g))
        ids = torch.randint(1, V, (L,), generator=g)
        lab = ids.clone()
        k = int(torch.randint(1, max(2, L // 2), (1,), generator=g))
        lab[:k] = -100
        ex.append((ids, lab))
    return ex


def collate(examples):
    T = max(e[0].numel() for e in examples)
    B = len(examples)
    ids = torch.zeros(B * T, dtype=torch.long)
    lab = torch.full((B * T,), -100, dtype=torch.long)
    for b, (i, l) in enumerate(examples):
        ids[b * T:b * T + i.numel()] = i
        lab[b * T:b * T + l.numel()] = l
    return ids, lab, B, T, [e[0].numel() for e in examples]


def train_run(cfg, Wbase, g, steps, targets, r=4, alpha=8.0, lr=5e-3, warmup=3, accum=2, bs=2, max_norm=1.0, wd=0.01):
    """steps optimizer steps of LoRA over 4 fixed micro-batches; window s = micro-batches 2s, 2s+1 (mod 4)."""
    examples = make_examples(g, cfg["vocab_size"], 8, 4, 11)
    mbs = [collate(examples[2 * j:2 * j + 2]) for j in range(4)]
    lora32 = {k: v for k, v in lora_init(cfg, g, r, False).items() if k.split(".")[-1] in targets}
    lora = {k: (A.to(D64).clone().requires_grad_(True), Bm.to(D64).clone().requires_grad_(True)) for k, (A, Bm) in lora32.items()}
    W = to64(Wbase)
    params = [p for pair in lora.values() for p in pair]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lambda(s, warmup, steps))
    losses, norms, lrs = [], [], []
    for s in range(steps):
        window = [mbs[(accum * s + j) % 4] for j in range(accum)]
        count = sum(int((shift_labels(lab, B, T) != -100).sum()) for (_, lab, B, T, _) in window)
        total = 0.0
        opt.zero_grad()
        for ids, lab, B, T, lengths in window:
            logits = forward(cfg, W, lora, alpha / r, ids, torch.arange(T).repeat(B), segments_padded(lengths, T))
            ls, _ = loss_sum(logits, shift_labels(lab, B, T))
            (ls / count).backward()
            total += float(ls) / count
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        losses.append(total)
        norms.append(float(norm))
    t = {}
    for j, (ids, lab, B, T, lengths) in enumerate(mbs):
        t[f"mb{j}_ids"] = ids.to(torch.int32)
        t[f"mb{j}_labels"] = lab.to(torch.int32)
        t[f"mb{j}_lengths"] = torch.tensor(lengths, dtype=torch.int32)
    for k, (A, Bm) in lora32.items():
        t[f"lora_A:{k}"] = A
        t[f"final_A:{k}"] = lora[k][0].detach()
        t[f"final_B:{k}"] = lora[k][1].detach()
    t["losses"] = torch.tensor(losses, dtype=D64)
    t["grad_norms"] = torch.tensor(norms, dtype=D64)
    t["lrs"] = torch.tensor(lrs, dtype=D64)
    meta = {"config": cfg, "steps": steps, "targets": targets, "rank": r, "alpha": alpha, "lr": lr, "warmup": warmup,
            "accum": accum, "batch": bs, "max_norm": max_norm, "weight_decay": wd, "micro_batches": [[j for j in range(4)]],
            "window_rule": "window s = micro-batches (accum*s + j) % 4"}
    return t, meta


def train_full_case(steps=6, lr=2e-3, warmup=1, wd=0.01, max_norm=1.0):
    """Full fine-tuning of every weight (f32 tiny Llama): HF decay groups (no decay for norms)."""
    cfg = llama_config()
    W32 = random_weights(cfg, common.seed(1234), bias=False)
    g = common.seed(5)
    examples = make_examples(g, cfg["vocab_size"], 4, 4, 11)
    mbs = [collate(examples[2 * j:2 * j + 2]) for j in range(2)]
    W = {k: v.to(D64).clone().requires_grad_(True) for k, v in W32.items()}
    decay = [v for k, v in W.items() if not k.endswith("norm.weight")]
    nodecay = [v for k, v in W.items() if k.endswith("norm.weight")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": nodecay, "weight_decay": 0.0}], lr=lr, eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s / max(1, warmup)) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    losses, norms = [], []
    for s in range(steps):
        count = sum(int((shift_labels(lab, B, T) != -100).sum()) for (_, lab, B, T, _) in mbs)
        opt.zero_grad()
        total = 0.0
        for ids, lab, B, T, lengths in mbs:
            logits = forward(cfg, W, None, 0.0, ids, torch.arange(T).repeat(B), segments_padded(lengths, T))
            ls, _ = loss_sum(logits, shift_labels(lab, B, T))
            (ls / count).backward()
            total += float(ls) / count
        norms.append(float(torch.nn.utils.clip_grad_norm_(list(W.values()), max_norm)))
        opt.step()
        sched.step()
        losses.append(total)
    t = {}
    for j, (ids, lab, B, T, lengths) in enumerate(mbs):
        t[f"mb{j}_ids"] = ids.to(torch.int32)
        t[f"mb{j}_labels"] = lab.to(torch.int32)
        t[f"mb{j}_lengths"] = torch.tensor(lengths, dtype=torch.int32)
    t["losses"] = torch.tensor(losses, dtype=D64)
    t["grad_norms"] = torch.tensor(norms, dtype=D64)
    for k in ("model.layers.1.mlp.down_proj.weight", "model.norm.weight", "model.embed_tokens.weight", "lm_head.weight"):
        t[f"final_w:{k}"] = W[k].detach()
    meta = {"config": cfg, "steps": steps, "lr": lr, "warmup": warmup, "weight_decay": wd, "max_norm": max_norm, "accum": 2, "scheduler": "linear"}
    return common.fixture("tests/reference/gen_engine.py train_full_case", meta, t)


def nf4_base(W32, blocksize=64, double=True):
    """bitsandbytes NF4 round trip of every linear weight (QLoRA's frozen base)."""
    out = dict(W32)
    for k, w in W32.items():
        if not any(f".{m}.weight" in k for m in LINEARS):
            continue
        _, absmax, codes = gen_nf4.quantize_nf4(w, blocksize)
        if double:
            absmax = gen_nf4.double_quant(absmax)["absmax_dq"]
        out[k] = gen_nf4.dequantize(codes, absmax, blocksize).reshape(w.shape)
    return out


def train_lora_case():
    cfg = llama_config()
    W32 = random_weights(cfg, common.seed(1234), bias=False)  # same weights as llama_case
    g = common.seed(99)
    t, meta = train_run(cfg, W32, g, 20, ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"])
    return common.fixture("tests/reference/gen_engine.py train_lora_case", meta, t)


def train_smollm3_case():
    cfg = smollm3_config()
    W32 = random_weights(cfg, common.seed(3333), bias=False)  # same weights as smollm3_case
    t, meta = train_run(cfg, W32, common.seed(98), 20, LINEARS)
    return common.fixture("tests/reference/gen_engine.py train_smollm3_case", meta, t)


def phi3_window_case():
    """Phi-3-mini-4k's shape of attention (config.sliding_window set, here 4 under 10-token rows) on
    the same tiny Phi-3: LoRA gradients past the window, with LongRoPE's long factors."""
    g = common.seed(2718)
    cfg = dict(phi3_config(), sliding_window=4)
    W32 = random_weights(cfg, g, bias=False)
    return padded_lora_case("phi3_window_case", cfg, g, W32, 2, 10, [10, 8], 2)


def train_phi3_case():
    """20 LoRA steps on Phi-3's four fused-module targets; micro-batches of up to 11 tokens cross
    original_max_position_embeddings 8, so the curve runs through both LongRoPE tables."""
    cfg = phi3_config()
    W32 = random_weights(cfg, common.seed(3141), bias=False)  # same weights as phi3_case
    t, meta = train_run(cfg, W32, common.seed(97), 20, PHI3_LINEARS)
    return common.fixture("tests/reference/gen_engine.py train_phi3_case", meta, t)


def train_qlora_case():
    cfg = llama_config()
    W32 = random_weights(cfg, common.seed(1234), bias=False)
    base = nf4_base(W32)
    g = common.seed(7)
    t, meta = train_run(cfg, base, g, 12, LINEARS)
    # The forward of the quantized base alone on micro-batch 0 (logits check).
    ids, lab, B, T, lengths = collate(make_examples(common.seed(8), cfg["vocab_size"], 2, 6, 10))
    t["base_ids"] = ids.to(torch.int32)
    t["base_lengths"] = torch.tensor(lengths, dtype=torch.int32)
    t["base_logits"] = forward(cfg, to64(base), None, 0.0, ids, torch.arange(T).repeat(B), segments_padded(lengths, T))
    meta.update({"nf4_blocksize": 64, "double_quant": True, "base_B": B, "base_T": T})
    return common.fixture("tests/reference/gen_engine.py train_qlora_case", meta, t)


def main():
    torch.set_default_dtype(torch.float32)
    return {
        "engine_llama": llama_case(),
        "engine_qwen2": qwen2_case(),
        "engine_qwen3": qwen3_case(),
        "engine_mistral": mistral_case(),
        "engine_gemma3": gemma3_case(),
        "engine_train_gemma3": train_gemma3_case(),
        "engine_gemma2": gemma2_case(),
        "engine_train_gemma2": train_gemma2_case(),
        "engine_smollm3": smollm3_case(),
        "engine_train_smollm3": train_smollm3_case(),
        "engine_phi3": phi3_case(),
        "engine_phi3_window": phi3_window_case(),
        "engine_train_phi3": train_phi3_case(),
        "engine_train_lora": train_lora_case(),
        "engine_train_qlora": train_qlora_case(),
        "engine_train_full": train_full_case(),
    }
