"""RMSNorm fixtures: torch autograd through the transformers LlamaRMSNorm formula
(transformers src/transformers/models/llama/modeling_llama.py: variance = x.pow(2).mean(-1);
x * rsqrt(variance + eps); weight * x), with f32, bf16 and f16 weights and a Qwen3 q_norm shape."""
import torch

import common


def case(name, rows, width, wdtype, eps, seed):
    common.seed(seed)
    x = torch.randn(rows, width) * 1.5 + 0.2
    w_stored = (1.0 + 0.3 * torch.randn(width)).to(wdtype)
    dy = torch.randn(rows, width)
    xx = x.clone().requires_grad_(True)
    # The kernel computes in f32 from the stored weight: take its f32 value as the trainable leaf
    # so the weight gradient is f32 like ours.
    ww = w_stored.float().clone().requires_grad_(True)
    var = xx.pow(2).mean(-1, keepdim=True)
    h = xx * torch.rsqrt(var + eps)
    y = ww * h
    y.backward(dy)
    rstd = torch.rsqrt(var + eps).squeeze(-1)
    return common.fixture(f"torch autograd, LlamaRMSNorm formula, weight {wdtype}",
                          {"rows": rows, "width": width, "eps": eps},
                          {"x": x, "w": w_stored, "dy": dy, "y": y, "rstd": rstd, "dx": xx.grad, "dw": ww.grad})


def main():
    return {
        "rmsnorm_f32": case("f32", 17, 80, torch.float32, 1e-6, 11),
        "rmsnorm_bf16": case("bf16", 5, 300, torch.bfloat16, 1e-5, 12),
        # Qwen3 q_norm: 7 tokens × 4 heads, head_dim 128, f16 weight.
        "rmsnorm_qnorm_f16": case("qnorm", 28, 128, torch.float16, 1e-6, 13),
    }
