"""RoPE fixtures: transformers' LlamaRotaryEmbedding.forward + apply_rotary_pos_emb
(src/transformers/models/llama/modeling_llama.py) re-stated with torch ops, with autograd for
the backward. inv_freq: default (src/transformers/modeling_rope_utils.py
_compute_default_rope_parameters) and llama3-scaled (_compute_llama3_parameters)."""
import math

import torch

import common


def default_inv_freq(base, dim):
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def llama3_inv_freq(base, dim, factor, low_freq_factor, high_freq_factor, old_context_len):
    inv_freq = default_inv_freq(base, dim)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def case(seed, tokens, hq, hkv, dim, positions, inv_freq, source):
    common.seed(seed)
    q = torch.randn(tokens, hq * dim)
    k = torch.randn(tokens, hkv * dim)
    dq_out = torch.randn(tokens, hq * dim)
    dk_out = torch.randn(tokens, hkv * dim)
    pos = torch.tensor(positions, dtype=torch.int64)[None, :]  # [1, N]
    inv = inv_freq[None, :, None].float()                      # [1, D/2, 1]
    freqs = (inv @ pos[:, None, :].float()).transpose(1, 2)     # [1, N, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = emb.cos()[:, None]                                    # [1, 1, N, D]
    sin = emb.sin()[:, None]
    qq = q.clone().requires_grad_(True)
    kk = k.clone().requires_grad_(True)
    q4 = qq.view(1, tokens, hq, dim).transpose(1, 2)
    k4 = kk.view(1, tokens, hkv, dim).transpose(1, 2)
    q_rot = q4 * cos + rotate_half(q4) * sin
    k_rot = k4 * cos + rotate_half(k4) * sin
    q_out = q_rot.transpose(1, 2).reshape(tokens, hq * dim)
    k_out = k_rot.transpose(1, 2).reshape(tokens, hkv * dim)
    torch.autograd.backward([q_out, k_out], [dq_out, dk_out])
    return common.fixture(source, {"tokens": tokens, "qHeads": hq, "kvHeads": hkv, "headDim": dim},
                          {"q": q, "k": k, "positionIds": pos[0].to(torch.int32), "invFreq": inv_freq,
                           "qOut": q_out, "kOut": k_out, "dqOut": dq_out, "dkOut": dk_out,
                           "dq": qq.grad, "dk": kk.grad})


def main():
    # Qwen2.5-0.5B: theta 1e6, D 64, GQA 14:2; two packed sequences (positions restart).
    qwen_pos = list(range(10)) + list(range(7))
    qwen = case(21, 17, 14, 2, 64, qwen_pos, default_inv_freq(1e6, 64), "transformers rope, default inv_freq theta=1e6")
    # Llama 3.x scaling (factor 8, low 1, high 4, original 8192), D 128, large positions.
    l3_inv = llama3_inv_freq(500000.0, 128, 8.0, 1.0, 4.0, 8192)
    llama3 = case(22, 6, 4, 2, 128, [0, 1, 8191, 8192, 65537, 131071], l3_inv, "transformers rope, llama3 inv_freq")
    # head_dim 80, theta 1e4, 130 tokens with positions up to ~33k.
    odd_pos = [(i * 257) % 33000 for i in range(130)]
    odd = case(23, 130, 2, 1, 80, odd_pos, default_inv_freq(10000.0, 80), "transformers rope, default inv_freq theta=1e4, D=80")
    return {"rope_qwen2": qwen, "rope_llama3": llama3, "rope_d80": odd}
