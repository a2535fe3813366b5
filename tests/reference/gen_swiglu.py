"""SwiGLU fixtures: torch autograd through F.silu(gate) * up (transformers LlamaMLP), and Gemma's GeGLU
F.gelu(gate, approximate="tanh") * up (Gemma3MLP with hidden_activation "gelu_pytorch_tanh",
transformers activations.py PytorchGELUTanh)."""
import torch
import torch.nn.functional as F

import common


def main():
    common.seed(31)
    rows, width = 19, 70
    gate = torch.randn(rows, width) * 3
    gate[0, :6] = torch.tensor([-90.0, -20.0, 0.0, 20.0, 90.0, -1e-3])  # saturation and zero
    up = torch.randn(rows, width)
    dy = torch.randn(rows, width)
    g = gate.clone().requires_grad_(True)
    u = up.clone().requires_grad_(True)
    y = F.silu(g) * u
    y.backward(dy)
    fx = common.fixture("torch autograd, F.silu(gate) * up", {"rows": rows, "width": width},
                        {"gate": gate, "up": up, "dy": dy, "y": y, "dGate": g.grad, "dUp": u.grad})
    g = gate.clone().requires_grad_(True)
    u = up.clone().requires_grad_(True)
    y = F.gelu(g, approximate="tanh") * u
    y.backward(dy)
    geglu = common.fixture("torch autograd, F.gelu(gate, approximate='tanh') * up",
                           {"rows": rows, "width": width},
                           {"gate": gate, "up": up, "dy": dy, "y": y, "dGate": g.grad, "dUp": u.grad})
    return {"swiglu": fx, "geglu": geglu}
