"""NF4 fixtures: bitsandbytes' 4-bit NormalFloat quantization rules re-implemented in torch/numpy.

Written from bitsandbytes/functional.py (quantize_4bit, dequantize_4bit, create_dynamic_map,
QuantState.as_dict) and csrc/kernels.cu (kQuantizeBlockwise, dQuantizeNF4, dQuantize), not from
our TypeScript/WGSL. bitsandbytes itself is not installable here (no PyPI), so these functions
are the oracle; tests compare packed bytes, absmax and double-quant codes exactly.
"""
import json

import numpy as np
import torch

import common

F32 = np.float32

# NF4 code book, bitsandbytes functional.py get_4bit_type("nf4") / kernels.cu dDequantizeNF4.
NF4 = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=torch.float32)

# The decision tree of kernels.cu dQuantizeNF4, flattened: code i+1 is chosen when x > T[i].
THRESH = torch.tensor([
    -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
    -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
    0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
    0.5016634166240692, 0.6427869200706482, 0.8614784181118011], dtype=torch.float32)


def dynamic_map():
    """create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) in f32.

    torch.linspace is emulated with its current scalar CPU formula (start + step*i below halfway,
    end - step*(steps-1-i) above); Debian's torch 1.13 vectorises it and differs by one ulp in
    some entries, so it is not called here."""
    data = []
    for i in range(7):
        steps = 2 ** i + 1
        start, end = F32(0.1), F32(1.0)
        step = F32((end - start) / F32(steps - 1))
        half = steps // 2
        b = [F32(start + F32(step * F32(k))) if k < half else F32(end - F32(step * F32(steps - k - 1))) for k in range(steps)]
        scale = F32(10.0 ** (i - 6))
        for k in range(steps - 1):
            mean = F32(F32(b[k] + b[k + 1]) / F32(2))
            data.append(float(F32(scale * mean)))
            data.append(float(F32(-scale * mean)))
    data += [0.0, 1.0]
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def blocks_of(flat, blocksize):
    """[nBlocks, blocksize] zero-padded view (the CUDA loads pad the last block with zeros)."""
    n = flat.numel()
    nb = (n + blocksize - 1) // blocksize
    padded = torch.zeros(nb * blocksize, dtype=torch.float32)
    padded[:n] = flat
    return padded.view(nb, blocksize), nb


def quantize_nf4(w, blocksize):
    """Returns (packed u8 [ceil(n/2)], absmax f32 [nBlocks], codes u8 [n])."""
    flat = w.detach().float().reshape(-1)
    n = flat.numel()
    blocks, nb = blocks_of(flat, blocksize)
    absmax = torch.zeros(nb, dtype=torch.float32)
    for b in range(nb):  # absmax over the valid items only
        absmax[b] = flat[b * blocksize:(b + 1) * blocksize].abs().max()
    recip = torch.ones(nb, dtype=torch.float32) / absmax  # 1/0 = inf, like 1.0f/x on CUDA
    scaled = blocks * recip[:, None]                        # 0·inf = NaN in an all-zero block
    q = (scaled.unsqueeze(-1) > THRESH).sum(-1).to(torch.uint8).reshape(-1)  # NaN > t is False → 0
    m = (n + 1) // 2
    q = q[:2 * m]
    packed = (q[0::2] << 4) | q[1::2]
    return packed.to(torch.uint8), absmax, q[:n]


def quantize8(x, code):
    """kernels.cu dQuantize<0>: 7-step binary search, then nearer bracketing code by f32 midpoint."""
    pivot = torch.full(x.shape, 127, dtype=torch.long)
    upper_p = torch.full(x.shape, 255, dtype=torch.long)
    lower_p = torch.zeros(x.shape, dtype=torch.long)
    lower = torch.full(x.shape, -1.0)
    upper = torch.full(x.shape, 1.0)
    val = code[pivot]
    for i in (64, 32, 16, 8, 4, 2, 1):
        gt = x > val
        lower_p = torch.where(gt, pivot, lower_p)
        lower = torch.where(gt, val, lower)
        upper_p = torch.where(gt, upper_p, pivot)
        upper = torch.where(gt, upper, val)
        pivot = torch.where(gt, pivot + i, pivot - i)
        val = code[pivot]
    upper = torch.where(upper_p == 255, code[255].expand(x.shape), upper)
    lower = torch.where(lower_p == 0, code[0].expand(x.shape), lower)
    gt = x > val
    hi = torch.where(x > (upper + val) * 0.5, upper_p, pivot)
    lo = torch.where(x < (lower + val) * 0.5, lower_p, pivot)
    return torch.where(gt, hi, lo).to(torch.uint8)


def double_quant(absmax, nested_block=256):
    """compress_statistics: offset = mean(absmax); (absmax - offset) in blocks of 256, 8-bit dynamic.

    The mean uses the order the GPU uses (thread t sums t, t+256, ... in f32, then a tree over the
    256 partials) times f32(1/n): a defined order instead of torch's device-dependent one."""
    a = absmax.numpy().astype(F32)
    n = a.size
    partial = np.zeros(256, dtype=F32)
    for c in range(0, n, 256):
        chunk = a[c:c + 256]
        partial[:chunk.size] += chunk
    h = 128
    while h > 0:
        partial[:h] += partial[h:2 * h]
        h //= 2
    offset = F32(partial[0] * F32(1.0 / n))
    centered = torch.from_numpy(a - offset)
    nn = (n + nested_block - 1) // nested_block
    nested = torch.zeros(nn, dtype=torch.float32)
    for b in range(nn):
        nested[b] = centered[b * nested_block:(b + 1) * nested_block].abs().max()
    code = dynamic_map()
    per = torch.repeat_interleave(nested, nested_block)[:n]
    x = centered * (torch.ones(n) / per)
    q = quantize8(x, code)
    q = torch.where(per == 0, torch.zeros_like(q), q)  # NaN path of the CUDA kernel
    decoded = (code[q.long()] * per) + torch.tensor(offset, dtype=torch.float32)  # two f32 roundings
    return {"offset": float(offset), "nested_absmax": nested, "codes": q, "code": code, "absmax_dq": decoded}


def dequantize(codes, absmax, blocksize):
    per = torch.repeat_interleave(absmax, blocksize)[:codes.numel()]
    return NF4[codes.long()] * per


def special_weight(rows, cols, g):
    """randn with an all-zero block, exact ties at the thresholds and a partial last block."""
    w = torch.randn(rows, cols, generator=g) * 0.05
    flat = w.view(-1)
    flat[64:128] = 0.0                     # all-zero block → codes 0 (NaN path)
    flat[128] = 1.0                        # absmax 1 so x·(1/absmax) = x exactly
    flat[129:129 + 15] = THRESH            # exactly on every midpoint → lower code
    flat[144:144 + 15] = torch.nextafter(THRESH, torch.full((15,), 2.0))  # one ulp above → upper
    flat[160] = -1.0
    return w


def quant_case(name, w, blocksize, dq, src_dtype, with_dequant=True):
    packed, absmax, codes = quantize_nf4(w, blocksize)
    tensors = {"w": w, "packed": packed, "absmax": absmax}
    meta = {"shape": list(w.shape), "blocksize": blocksize, "double_quant": dq, "src": src_dtype}
    if dq:
        d = double_quant(absmax)
        tensors.update({"absmax_codes": d["codes"], "nested_absmax": d["nested_absmax"],
                        "code8": d["code"], "absmax_dq": d["absmax_dq"]})
        meta["offset"] = d["offset"]
        if with_dequant:
            tensors["dequant"] = dequantize(codes, d["absmax_dq"], blocksize)
    else:
        tensors["dequant"] = dequantize(codes, absmax, blocksize)
    return common.fixture(f"bitsandbytes NF4 rules in torch ({name})", meta, tensors)


def bnb_state_bytes(state):
    return torch.tensor(list(json.dumps(state).encode("utf-8")), dtype=torch.uint8)


def checkpoint_fixture(g):
    """Two modules in the layout of a *-bnb-4bit safetensors checkpoint (QuantState.as_dict(packed=True))."""
    out = {}
    meta = {"modules": []}
    for mod, shape, nested in (("model.layers.0.self_attn.q_proj", (40, 64), True),
                               ("model.layers.0.mlp.down_proj", (24, 72), False)):
        w = (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)
        packed, absmax, codes = quantize_nf4(w, 64)
        key = f"{mod}.weight"
        out[key] = packed.view(-1, 1)
        out[f"{key}.quant_map"] = NF4.clone()
        state = {"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": list(shape)}
        if nested:
            d = double_quant(absmax)
            out[f"{key}.absmax"] = d["codes"]
            out[f"{key}.nested_absmax"] = d["nested_absmax"]
            out[f"{key}.nested_quant_map"] = d["code"]
            state.update({"nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": d["offset"]})
            deq = dequantize(codes, d["absmax_dq"], 64)
        else:
            out[f"{key}.absmax"] = absmax
            deq = dequantize(codes, absmax, 64)
        out[f"{key}.quant_state.bitsandbytes__nf4"] = bnb_state_bytes(state)
        out[f"expected.{mod}"] = deq.view(*shape)
        meta["modules"].append({"name": mod, "shape": list(shape), "nested": nested})
    return common.fixture("bitsandbytes QuantState.as_dict(packed=True) layout, rules in torch", meta, out)


def matmul_fixture(g):
    """y = x·dequant(W)ᵀ and dX = dY·dequant(W) in float64 from the NF4 rules (blocksize 64, double quant)."""
    M, N, K = 19, 40, 72
    w = torch.randn(N, K, generator=g) * 0.1
    packed, absmax, codes = quantize_nf4(w, 64)
    d = double_quant(absmax)
    wq = dequantize(codes, d["absmax_dq"], 64).view(N, K)
    x = torch.randn(M, K, generator=g)
    dy = torch.randn(M, N, generator=g)
    y = (x.double() @ wq.double().T).float()
    dx = (dy.double() @ wq.double()).float()
    return common.fixture("x·dequant(W)ᵀ and dY·dequant(W) in float64", {"M": M, "N": N, "K": K, "offset": d["offset"]},
                          {"w": w, "x": x, "dy": dy, "y": y, "dx": dx, "packed": packed, "absmax_codes": d["codes"],
                           "nested_absmax": d["nested_absmax"], "code8": d["code"]})


def main():
    g = common.seed(4242)
    fx = {}
    fx["nf4_f32_b64"] = quant_case("f32, blocksize 64, ties and a zero block", special_weight(48, 80, g), 64, False, "f32")
    w_bf16 = (torch.randn(37, 29, generator=g) * 0.03).to(torch.bfloat16)
    fx["nf4_bf16_odd"] = quant_case("bf16 37×29 (odd numel, partial last block)", w_bf16, 64, False, "bf16")
    w_f16 = (torch.randn(48, 96, generator=g) * 0.2).to(torch.float16)
    fx["nf4_f16_b32_dq"] = quant_case("f16, blocksize 32, double quant", w_f16, 32, True, "f16")
    w_big = torch.randn(150, 256, generator=g) * torch.linspace(0.01, 0.3, 150)[:, None]
    fx["nf4_f32_dq_multi"] = quant_case("f32 150×256, blocksize 32, double quant over 1200 blocks (5 nested, last partial)",
                                        w_big, 32, True, "f32", with_dequant=False)
    w_wide = torch.randn(5, 900, generator=g)
    fx["nf4_f32_b256"] = quant_case("f32 5×900, blocksize 256", w_wide, 256, False, "f32")
    fx["nf4_dynamic_map"] = common.fixture("create_dynamic_map(signed=True) in f32", {}, {"code8": dynamic_map()})
    fx["nf4_checkpoint"] = checkpoint_fixture(g)
    fx["nf4_matmul"] = matmul_fixture(g)
    return fx
