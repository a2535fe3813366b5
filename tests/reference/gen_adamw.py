"""AdamW fixtures: torch.optim.AdamW (torch/optim/adamw.py) for 3 steps over three tensors in
three param groups (weight_decay 0.01 / 0 / 0.01 at 2× lr, as LoRA+), each step preceded by
torch.nn.utils.clip_grad_norm_(max_norm=1.0) over all of them (step 2's gradients are large
enough to be clipped)."""
import torch

import common


def main():
    common.seed(71)
    shapes = [(37, 8), (300,), (16, 5)]
    params = [torch.nn.Parameter(torch.randn(*s) * 0.5) for s in shapes]
    start = torch.cat([p.detach().flatten() for p in params]).clone()
    groups = [{"params": [params[0]], "lr": 1e-3, "weight_decay": 0.01},
              {"params": [params[1]], "lr": 1e-3, "weight_decay": 0.0},
              {"params": [params[2]], "lr": 2e-3, "weight_decay": 0.01}]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    tensors = {"start": start}
    norms = []
    for step, scale in enumerate([0.01, 1.0, 0.05], start=1):
        grads = [torch.randn(*s) * scale for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        tensors[f"grads{step}"] = torch.cat([g.flatten() for g in grads])
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)))
        opt.step()
        tensors[f"params{step}"] = torch.cat([p.detach().flatten() for p in params]).clone()
    state = [opt.state[p] for p in params]
    tensors["m3"] = torch.cat([s["exp_avg"].flatten() for s in state])
    tensors["v3"] = torch.cat([s["exp_avg_sq"].flatten() for s in state])
    meta = {"counts": [int(torch.tensor(s).prod()) for s in shapes],
            "groups": [{"lr": g["lr"], "weightDecay": g["weight_decay"]} for g in groups],
            "maxNorm": 1.0, "norms": norms, "steps": 3}
    return {"adamw": common.fixture("torch.optim.AdamW + clip_grad_norm_(1.0), 3 steps", meta, tensors)}
