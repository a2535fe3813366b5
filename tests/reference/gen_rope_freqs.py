"""RoPE inverse frequencies as transformers computes them (`src/transformers/modeling_rope_utils.py`:
_compute_default_rope_parameters, _compute_linear_scaling_rope_parameters,
_compute_dynamic_ntk_parameters, _compute_llama3_parameters, _compute_longrope_parameters), written
here from those formulas in torch f32 for configs shaped like real checkpoints."""
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


def longrope_inv_freq(base, dim, ext):
    """_compute_longrope_parameters: 1 / (ext_factors · base^(arange(0, dim, 2) / dim)), dim the
    rotary dim (head_dim · partial_rotary_factor); ext = long_factor when seq_len exceeds
    original_max_position_embeddings, else short_factor."""
    shape = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (torch.tensor(ext, dtype=torch.float32) * base ** shape)


# microsoft/Phi-4-mini-instruct config.json rope_scaling.long_factor (short_factor: 48 × 1.0).
PHI4_LONG = [1, 1.118320672, 1.250641126, 1.398617824, 1.564103225, 1.74916897, 1.956131817, 2.187582649,
             2.446418898, 2.735880826, 3.059592084, 3.421605075, 3.826451687, 4.279200023, 4.785517845,
             5.351743533, 5.984965424, 6.693110555, 7.485043894, 8.370679318, 9.36110372, 10.4687158,
             11.70738129, 13.09260651, 14.64173252, 16.37415215, 18.31155283, 20.47818807, 22.90118105,
             25.61086418, 28.64115884, 32.03, 32.1, 32.13, 32.23, 32.6, 32.61, 32.64, 32.66, 32.7, 32.71,
             32.93, 32.97, 33.28, 33.49, 33.5, 44.16, 47.77]
# A head of 96 rotated whole (Phi-3.5-mini's shape) with non-round factors.
HEAD96_SHORT = [round(1.0 + 0.0371 * i ** 1.1, 9) for i in range(48)]
HEAD96_LONG = [round(1.08 + 1.37 * i ** 1.05, 9) for i in range(48)]
PHI_COMMON = {"architectures": ["Phi3ForCausalLM"], "hidden_size": 3072, "rope_theta": 10000.0,
              "max_position_embeddings": 131072, "original_max_position_embeddings": 4096}


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
    "phi3_5_longrope_short": ({**PHI_COMMON, "head_dim": 96, "num_attention_heads": 32,
                               "rope_scaling": {"type": "longrope", "short_factor": HEAD96_SHORT, "long_factor": HEAD96_LONG}},
                              lambda: longrope_inv_freq(10000.0, 96, HEAD96_SHORT)),
    "phi3_5_longrope_seq5000": ({**PHI_COMMON, "head_dim": 96, "num_attention_heads": 32, "seq_len": 5000,
                                 "rope_scaling": {"type": "longrope", "short_factor": HEAD96_SHORT, "long_factor": HEAD96_LONG}},
                                lambda: longrope_inv_freq(10000.0, 96, HEAD96_LONG)),
    "phi4_mini_partial_seq4097": ({**PHI_COMMON, "head_dim": 128, "num_attention_heads": 24, "seq_len": 4097,
                                   "partial_rotary_factor": 0.75,
                                   "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 48, "long_factor": PHI4_LONG}},
                                  lambda: longrope_inv_freq(10000.0, 96, PHI4_LONG)),
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
