"""Attention fixtures: transformers' eager attention (modeling_llama.py eager_attention_forward:
repeat_kv for GQA, scores·scaling + mask, softmax in f32, ·V) written out explicitly with a
boolean mask (no SDPA), autograd for dQ/dK/dV. Computed in f64 from f32-representable inputs.

Masking rule (src/engine/ops/attention.ts): query i sits at key position offset + i and sees key
m iff m <= offset + i and, with segment ids (per key position), seg[m] == seg[offset + i]; a
query with id < 0 is padding: output 0, LSE 0, no gradient.

Sliding window (transformers masking_utils.py sliding_window_overlay: `kv_idx > q_idx -
sliding_window`): additionally offset + i - m < window. Soft-capping (modeling_gemma2.py
eager_attention_forward: `attn_weights = attn_weights / softcap; tanh; * softcap` after the
scaling and before the mask is added): scores = softcap * tanh(scores / softcap). Autograd
differentiates through the tanh, so the fixtures check the kernels' 1 - tanh^2 factor."""
import math

import torch

import common


def attention(q, k, v, hq, hkv, dim, offset, seg, window=None, softcap=None):
    n, nk = q.shape[0], k.shape[0]
    group = hq // hkv
    q4 = q.view(n, hq, dim).transpose(0, 1)                                      # [Hq, N, D]
    k4 = k.view(nk, hkv, dim).transpose(0, 1).repeat_interleave(group, dim=0)    # repeat_kv
    v4 = v.view(nk, hkv, dim).transpose(0, 1).repeat_interleave(group, dim=0)
    pos = torch.arange(n)[:, None] + offset
    keys = torch.arange(nk)[None, :]
    allowed = keys <= pos                                                        # [N, Nk]
    if window:
        allowed = allowed & (keys > pos - window)                                # sliding_window_overlay
    if seg is not None:
        seg_q = seg[offset:offset + n]
        allowed = allowed & (seg[None, :] == seg_q[:, None]) & (seg_q[:, None] >= 0)
    row_valid = allowed.any(dim=1)
    scores = (q4 @ k4.transpose(1, 2)) / math.sqrt(dim)
    if softcap:                                                                  # modeling_gemma2.py
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~allowed[None], float("-inf"))
    # Padding rows see nothing: give them a harmless finite row, then zero their output.
    scores = torch.where(row_valid[None, :, None], scores, torch.zeros_like(scores))
    probs = torch.softmax(scores, dim=-1) * row_valid[None, :, None]
    out = (probs @ v4).transpose(0, 1).reshape(n, hq * dim)
    lse = torch.logsumexp(scores, dim=-1) * row_valid[None, :]                   # [Hq, N]
    return out, lse


def case(seed, n, nk, hq, hkv, dim, offset=0, seg=None, q_scale=1.0, window=None, softcap=None):
    common.seed(seed)
    q = torch.randn(n, hq * dim) * q_scale
    k = torch.randn(nk, hkv * dim)
    v = torch.randn(nk, hkv * dim)
    d_out = torch.randn(n, hq * dim)
    qq, kk, vv = (t.double().requires_grad_(True) for t in (q, k, v))
    seg_t = torch.tensor(seg, dtype=torch.int64) if seg is not None else None
    out, lse = attention(qq, kk, vv, hq, hkv, dim, offset, seg_t, window, softcap)
    out.backward(d_out.double())
    meta = {"N": n, "Nk": nk, "Hq": hq, "Hkv": hkv, "D": dim, "offset": offset, "segments": seg is not None}
    if window:
        meta["window"] = window
    if softcap:
        meta["softcap"] = softcap
    tensors = {"q": q, "k": k, "v": v, "dOut": d_out, "out": out, "lse": lse,
               "dq": qq.grad, "dk": kk.grad, "dv": vv.grad}
    if seg_t is not None:
        tensors["seg"] = seg_t
    src = "torch autograd, eager attention (repeat_kv, explicit causal/segment mask, softmax) in f64"
    if window or softcap:
        src += f" with sliding window {window} and logit softcap {softcap} (modeling_gemma2.py, masking_utils.py)"
    return common.fixture(src, meta, tensors)


def main():
    packed = [0] * 9 + [1] * 12 + [-1] * 3 + [2] * 6 + [-1] * 3  # two packed rows, padding inside and at the end
    packed37 = [0] * 11 + [1] * 3 + [2] * 17 + [-1] * 6  # a segment shorter than the window, padding at the end
    return {
        "attention_gqa": case(41, 19, 19, 14, 2, 64),
        "attention_segments": case(42, 33, 33, 4, 2, 80, seg=packed, q_scale=2.0),
        "attention_offset": case(43, 4, 16, 14, 2, 64, offset=12),
        # Odd shapes: N 37, head_dim 24, GQA 3:1 / 6:2; windows far shorter than the sequence.
        "attention_window": case(44, 37, 37, 3, 1, 24, seg=packed37, window=5),
        "attention_window_softcap": case(45, 37, 37, 6, 2, 24, window=16, softcap=2.0, q_scale=3.0),
        "attention_softcap": case(46, 37, 37, 3, 1, 24, softcap=50.0, q_scale=8.0),
        # KV-cache decode past the window: 3 queries at 57..59 of 60 keys see 16 keys each.
        "attention_window_decode": case(47, 3, 60, 6, 2, 24, offset=57, window=16, softcap=2.0, q_scale=3.0),
        # Long cache: the forward splits the window's 300 keys (flash-decoding) and combines.
        "attention_window_split": case(48, 1, 500, 6, 2, 24, offset=499, window=300),
    }
