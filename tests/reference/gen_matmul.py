"""Matmul fixtures: nn.Linear-shaped y = x·Wᵀ with f32 and bf16 weights, and a batched Aᵀ·B."""
import torch

import common


def main():
    common.seed(1234)
    x = torch.randn(37, 50)
    w = torch.randn(23, 50)
    w_bf16 = w.to(torch.bfloat16)
    # Reference in float64 from the values the kernel actually sees.
    y = (x.double() @ w.double().T).float()
    y_bf16 = (x.double() @ w_bf16.double().T).float()
    linear = common.fixture("torch.nn.functional.linear in float64", {"M": 37, "N": 23, "K": 50},
                            {"x": x, "w": w, "w_bf16": w_bf16, "y": y, "y_bf16": y_bf16})

    a = torch.randn(3, 19, 9)   # stored [K=19, M=9] per batch: op(A) = Aᵀ
    b = torch.randn(3, 19, 13)  # stored [K=19, N=13]
    c = (a.double().transpose(1, 2) @ b.double()).float()
    batched = common.fixture("torch.bmm(a.transpose(1,2), b) in float64", {"M": 9, "N": 13, "K": 19, "batch": 3},
                             {"a": a, "b": b, "c": c})
    return {"matmul_linear": linear, "matmul_batched_ta": batched}
