"""RoPE inverse frequencies as transformers computes them (`src/transformers/modeling_rope_utils.py`:
_compute_default_rope_parameters, _compute_linear_scaling_rope_parameters,
_compute_dynamic_ntk_parameters, _compute_llama3_parameters), written here from those formulas
in torch f32 for configs shaped like real checkpoints."""
import math

import torch

import common


def default_inv_freq(base, dim):
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def linear_inv_freq(base, dim, factor):
    inv = default_inv_freq(base, dim)
    inv /= factor
    return inv


def dynamic_inv_freq(base, dim, factor, max_pos, seq_len=None):
    seq_len = seq_len if seq_len is not None and seq_len > max_pos else max_pos
    base = base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    return default_inv_freq(base, dim)


def llama3_inv_freq(base, dim, factor, low, high, old_ctx):
    inv = default_inv_freq(base, dim)
    low_wavelen = old_ctx / low
    high_wavelen = old_ctx / high
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


CASES = {
    # name: (config.json fields, inv_freq)
    "qwen2_5_0_5b_default": ({"head_dim": 64, "rope_theta": 1000000.0, "max_position_embeddings": 32768, "rope_scaling": None},
                             lambda: default_inv_freq(1000000.0, 64)),
    "qwen3_default_head128": ({"head_dim": 128, "rope_theta": 1000000.0, "max_position_embeddings": 40960, "rope_scaling": None},
                              lambda: default_inv_freq(1000000.0, 128)),
    "llama3_2_1b": ({"head_dim": 64, "rope_theta": 500000.0, "max_position_embeddings": 131072,
                     "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                      "original_max_position_embeddings": 8192, "rope_type": "llama3"}},
                    lambda: llama3_inv_freq(500000.0, 64, 32.0, 1.0, 4.0, 8192)),
    "llama3_1_8b": ({"head_dim": 128, "rope_theta": 500000.0, "max_position_embeddings": 131072,
                     "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                      "original_max_position_embeddings": 8192, "rope_type": "llama3"}},
                    lambda: llama3_inv_freq(500000.0, 128, 8.0, 1.0, 4.0, 8192)),
    "linear_legacy_type": ({"head_dim": 128, "rope_theta": 10000.0, "max_position_embeddings": 16384,
                            "rope_scaling": {"type": "linear", "factor": 4.0}},
                           lambda: linear_inv_freq(10000.0, 128, 4.0)),
    "dynamic_init": ({"head_dim": 128, "rope_theta": 10000.0, "max_position_embeddings": 2048,
                      "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
                     lambda: dynamic_inv_freq(10000.0, 128, 2.0, 2048)),
    "dynamic_seq5000": ({"head_dim": 128, "rope_theta": 10000.0, "max_position_embeddings": 2048, "seq_len": 5000,
                         "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
                        lambda: dynamic_inv_freq(10000.0, 128, 2.0, 2048, 5000)),
    "odd_theta_head48": ({"head_dim": 48, "rope_theta": 12345.5, "max_position_embeddings": 4096, "rope_scaling": None},
                         lambda: default_inv_freq(12345.5, 48)),
}


def main():
    meta = {}
    tensors = {}
    for name, (cfg, fn) in CASES.items():
        meta[name] = cfg
        tensors[name] = fn()
    return {"rope_freqs": common.fixture("modeling_rope_utils.py formulas in torch f32", meta, tensors)}
