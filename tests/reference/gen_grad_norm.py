"""Gradient-norm fixtures: torch.nn.utils.clip_grad_norm_ (torch/nn/utils/clip_grad.py) over
several parameters, returning the total norm and the clipped gradients."""
import torch

import common


def main():
    common.seed(61)
    shapes = [(64, 8), (8, 100), (333,), (17, 5)]
    params = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape) * 0.3
    before = torch.cat([p.grad.flatten() for p in params])
    total = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)
    after = torch.cat([p.grad.flatten() for p in params])
    fx = common.fixture("torch.nn.utils.clip_grad_norm_(max_norm=1.0)",
                        {"counts": [int(torch.tensor(s).prod()) for s in shapes], "maxNorm": 1.0},
                        {"before": before, "after": after, "norm": total.reshape(1)})
    return {"grad_norm": fx}
