"""LoRA fixtures: nn.Linear + LoRA with PEFT's formula (peft src/peft/tuners/lora/layer.py, Linear.forward):
    result = base_layer(x) + lora_B(lora_A(dropout(x))) * scaling,  scaling = alpha/r or alpha/sqrt(r)
Dropout is 0 here (autograd comparison); dropout > 0 is checked against the CPU reference that shares
our hash RNG. B is random (not PEFT's zero init) so every gradient is exercised. Float64 autograd."""
import math

import torch

import common
import gen_nf4


def lora_case(source, N, fin, fout, r, alpha, rslora, g, nf4_base=False):
    w = torch.randn(fout, fin, generator=g) * 0.2
    meta = {"N": N, "in": fin, "out": fout, "r": r, "alpha": alpha, "rslora": rslora}
    tensors = {"w": w}
    w_eff = w
    if nf4_base:
        packed, absmax, codes = gen_nf4.quantize_nf4(w, 64)
        d = gen_nf4.double_quant(absmax)
        w_eff = gen_nf4.dequantize(codes, d["absmax_dq"], 64).view(fout, fin)
        tensors.update({"packed": packed, "absmax_codes": d["codes"], "nested_absmax": d["nested_absmax"], "code8": d["code"]})
        meta["offset"] = d["offset"]
    bound = 1 / math.sqrt(fin)  # kaiming_uniform_(a=sqrt(5)) on [r, in]
    a = (torch.rand(r, fin, generator=g) * 2 - 1) * bound
    b = torch.randn(fout, r, generator=g) * 0.1
    x = torch.randn(N, fin, generator=g)
    dy = torch.randn(N, fout, generator=g)
    scaling = alpha / math.sqrt(r) if rslora else alpha / r
    meta["scale"] = scaling

    base = torch.nn.Linear(fin, fout, bias=False).double()
    lora_a = torch.nn.Linear(fin, r, bias=False).double()
    lora_b = torch.nn.Linear(r, fout, bias=False).double()
    with torch.no_grad():
        base.weight.copy_(w_eff.double())
        lora_a.weight.copy_(a.double())
        lora_b.weight.copy_(b.double())
    base.weight.requires_grad_(False)
    xx = x.double().requires_grad_(True)
    y = base(xx) + lora_b(lora_a(torch.nn.functional.dropout(xx, p=0.0))) * scaling
    y.backward(dy.double())
    tensors.update({"a": a, "b": b, "x": x, "dy": dy, "y": y.detach(), "dA": lora_a.weight.grad, "dB": lora_b.weight.grad, "dX": xx.grad})
    return common.fixture(source, meta, tensors)


def main():
    g = common.seed(777)
    return {
        "lora_f32": lora_case("PEFT Linear LoRA (alpha/r), float64 autograd", 17, 40, 24, 8, 16, False, g),
        "lora_rslora": lora_case("PEFT Linear LoRA with use_rslora (alpha/sqrt(r)), float64 autograd", 5, 33, 20, 4, 8, True, g),
        "lora_nf4": lora_case("QLoRA: NF4 base (blocksize 64, double quant) + LoRA, float64 autograd", 9, 64, 48, 16, 32, False, g, nf4_base=True),
    }
