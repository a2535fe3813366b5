"""Merge fixtures: PEFT's merge W' = W + scaling·(B @ A), exported as torch does it:
    (W.float() + scaling * (B @ A)).to(dtype)      (round to nearest even)
`near_tie` marks elements whose f32 value lies within 4 f32 ulps of a rounding boundary of the
16-bit output: there our f32 sum order (a plain loop over r) may legitimately round the other
way, so the test allows one 16-bit ulp there and demands equality everywhere else."""
import math

import torch

import common
import gen_nf4


def round16(v, dtype):
    return v.to(dtype).view(torch.int16).to(torch.int32) & 0xFFFF


def near_tie(v, dtype):
    up, down = v.clone(), v.clone()
    for _ in range(4):
        up = torch.nextafter(up, torch.full_like(up, math.inf))
        down = torch.nextafter(down, torch.full_like(down, -math.inf))
    return (round16(up, dtype) != round16(down, dtype)).to(torch.uint8)


def merge_case(source, w_stored, w_f32, a, b, scaling, meta, extra=None):
    merged = w_f32 + scaling * (b @ a)
    tensors = {"a": a, "b": b, "merged_f32": merged,
               "merged_bf16": merged.to(torch.bfloat16), "merged_f16": merged.to(torch.float16),
               "tie_bf16": near_tie(merged, torch.bfloat16), "tie_f16": near_tie(merged, torch.float16)}
    if w_stored is not None:
        tensors["w"] = w_stored
    tensors.update(extra or {})
    meta = dict(meta, scale=scaling)
    return common.fixture(source, meta, tensors)


def main():
    g = common.seed(2024)
    out = {}
    # f32 base, 37×50, r=8, alpha=16 (scale 2)
    w = torch.randn(37, 50, generator=g) * 0.05
    a = (torch.rand(8, 50, generator=g) * 2 - 1) / math.sqrt(50)
    b = torch.randn(37, 8, generator=g) * 0.02
    out["merge_f32"] = merge_case("(W + s·B@A).to(dtype), f32 base", w, w, a, b, 16 / 8,
                                  {"out": 37, "in": 50, "r": 8, "base": "f32"})
    # bf16 base (the usual export), 24×40, rsLoRA r=4 alpha=8 → scale 4
    wb = (torch.randn(24, 40, generator=g) * 0.05).to(torch.bfloat16)
    a = (torch.rand(4, 40, generator=g) * 2 - 1) / math.sqrt(40)
    b = torch.randn(24, 4, generator=g) * 0.01
    out["merge_bf16"] = merge_case("(W.float() + s·B@A).to(dtype), bf16 base, rsLoRA", wb, wb.float(), a, b, 8 / math.sqrt(4),
                                   {"out": 24, "in": 40, "r": 4, "base": "bf16"})
    # f16 base, odd sizes 13×27, r=3 alpha=6
    wh = (torch.randn(13, 27, generator=g) * 0.1).to(torch.float16)
    a = (torch.rand(3, 27, generator=g) * 2 - 1) / math.sqrt(27)
    b = torch.randn(13, 3, generator=g) * 0.05
    out["merge_f16"] = merge_case("(W.float() + s·B@A).to(dtype), f16 base", wh, wh.float(), a, b, 2.0,
                                  {"out": 13, "in": 27, "r": 3, "base": "f16"})
    # NF4 base (blocksize 64, double quant): merge into the dequantized weight, as PEFT does for QLoRA
    w4 = torch.randn(32, 96, generator=g) * 0.05
    packed, absmax, codes = gen_nf4.quantize_nf4(w4, 64)
    d = gen_nf4.double_quant(absmax)
    wq = gen_nf4.dequantize(codes, d["absmax_dq"], 64).view(32, 96)
    a = (torch.rand(16, 96, generator=g) * 2 - 1) / math.sqrt(96)
    b = torch.randn(32, 16, generator=g) * 0.02
    out["merge_nf4"] = merge_case("(dequant(W) + s·B@A).to(dtype), NF4 base with double quant", None, wq, a, b, 32 / 16,
                                  {"out": 32, "in": 96, "r": 16, "base": "nf4", "offset": d["offset"]},
                                  {"packed": packed, "absmax_codes": d["codes"], "nested_absmax": d["nested_absmax"], "code8": d["code"]})
    return out
