"""Shared helpers for the PyTorch reference generators (run with Debian's /usr/bin/python3).

Each gen_<family>.py defines main() that returns {fixture_name: fixture_dict}; generate.py
writes them to fixtures/<fixture_name>.json. Tensors are stored as base64 of little-endian
bytes with dtype and shape, so values are exact and files stay small.
"""
import base64
import json
import os

import torch

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def seed(s):
    torch.manual_seed(s)
    g = torch.Generator()
    g.manual_seed(s)
    return g


def tensor(t):
    """Encodes a tensor (f32, i32, u8, bf16/f16 as raw 16-bit bits) for the JSON fixture."""
    t = t.detach().contiguous().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
        kind = "bf16" if t.dtype == torch.bfloat16 else "f16"
        raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
    elif t.dtype == torch.float32 or t.dtype == torch.float64:
        kind = "f32"
        raw = t.to(torch.float32).numpy().astype("<f4").tobytes()
    elif t.dtype in (torch.int32, torch.int64):
        kind = "i32"
        raw = t.to(torch.int32).numpy().astype("<i4").tobytes()
    elif t.dtype == torch.uint8:
        kind = "u8"
        raw = t.numpy().tobytes()
    else:
        raise ValueError(f"unsupported dtype {t.dtype}")
    return {"dtype": kind, "shape": list(t.shape), "b64": base64.b64encode(raw).decode("ascii")}


def fixture(source, meta, tensors):
    return {"source": source, "torch": torch.__version__, "meta": meta,
            "tensors": {k: tensor(v) for k, v in tensors.items()}}


def write(name, fx):
    os.makedirs(FIXTURES, exist_ok=True)
    path = os.path.join(FIXTURES, f"{name}.json")
    with open(path, "w") as f:
        json.dump(fx, f, separators=(",", ":"))
        f.write("\n")
    return path
