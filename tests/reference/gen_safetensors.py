"""safetensors written and read by an independent Python implementation of the format.

The `safetensors` package is not installed here, so this follows the spec directly
(huggingface/safetensors README.md): u64 LE header length N, N bytes of UTF-8 JSON
{name: {dtype, shape, data_offsets}, "__metadata__": {str: str}} padded with spaces, then the
contiguous little-endian data block.

Two uses:
  * generate.py calls main(): writes the fixture `safetensors_torch` holding a file built here
    from torch tensors (base64) plus the tensors themselves, so the TS reader is checked against
    bytes it did not write.
  * `/usr/bin/python3 tests/reference/gen_safetensors.py --check FILE...` parses files written by
    our TS writer with the checks below and prints one JSON summary per file (the unit test runs it).
"""
import base64
import json
import struct
import sys

import torch

import common

DTYPES = {
    # name: (bytes per element, torch dtype or None when torch 1.13 has no such type)
    "F64": (8, torch.float64), "F32": (4, torch.float32), "F16": (2, torch.float16),
    "BF16": (2, torch.bfloat16), "I64": (8, torch.int64), "I32": (4, torch.int32),
    "I16": (2, torch.int16), "I8": (1, torch.int8), "U8": (1, torch.uint8), "BOOL": (1, torch.bool),
    "U16": (2, None), "U32": (4, None), "U64": (8, None), "F8_E4M3": (1, None), "F8_E5M2": (1, None),
}


def raw_bytes(t):
    t = t.contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().tobytes()  # little-endian host


def write_file(tensors, metadata, order):
    """tensors: {name: (dtype_name, shape, raw bytes)}; data laid out in `order`."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    at = 0
    for name in order:
        dt, shape, raw = tensors[name]
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [at, at + len(raw)]}
        at += len(raw)
    # Keys sorted, unlike our writer: the reader must not depend on key order.
    text = json.dumps(header, sort_keys=True, separators=(", ", ": ")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(tensors[n][2] for n in order)


def parse_file(data, fname):
    if len(data) < 8:
        raise ValueError(f"{fname}: shorter than 8 bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > 100_000_000 or 8 + n > len(data):
        raise ValueError(f"{fname}: bad header length {n}")
    if n % 8 != 0:
        raise ValueError(f"{fname}: header length {n} is not padded to a multiple of 8")
    text = data[8:8 + n].decode("utf-8")
    if not text.startswith("{") or text.rstrip(" ") != text.rstrip():
        raise ValueError(f"{fname}: header must start with {{ and be padded with spaces")
    header = json.loads(text)
    meta = header.pop("__metadata__", None)
    if meta is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError(f"{fname}: __metadata__ must map strings to strings")
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    body = data[8 + n:]
    cursor = 0
    out = {}
    for name, e in entries:
        size, tdt = DTYPES[e["dtype"]]
        b, end = e["data_offsets"]
        numel = 1
        for d in e["shape"]:
            numel *= d
        if b != cursor or end - b != numel * size:
            raise ValueError(f"{fname}: {name}: offsets {b},{end} not contiguous or wrong size")
        cursor = end
        raw = body[b:end]
        if tdt is not None and numel > 0:
            if tdt in (torch.bfloat16, torch.float16):
                t = torch.frombuffer(bytearray(raw), dtype=torch.int16).view(tdt)
            else:
                t = torch.frombuffer(bytearray(raw), dtype=tdt)
            t = t.reshape(e["shape"])
            total = float(t.double().sum()) if tdt != torch.bool else float(t.sum())
        else:
            total = float(sum(raw))
        out[name] = {"dtype": e["dtype"], "shape": e["shape"], "sum": total,
                     "first_bytes": raw[:8].hex()}
    if cursor != len(body):
        raise ValueError(f"{fname}: {len(body) - cursor} bytes after the last tensor")
    return {"metadata": meta, "tensors": out, "header_length": n}


def main():
    g = torch.Generator().manual_seed(77)
    f32 = torch.randn(3, 5, generator=g)
    f64 = torch.randn(4, generator=g, dtype=torch.float64)
    f16 = torch.randn(2, 3, generator=g).to(torch.float16)
    bf16 = torch.randn(7, generator=g).to(torch.bfloat16)
    i64 = torch.tensor([[-(2 ** 40), 1], [3, 2 ** 33]], dtype=torch.int64)
    i32 = torch.arange(-3, 3, dtype=torch.int32).reshape(2, 3)
    i16 = torch.tensor([-300, 7, 32767], dtype=torch.int16)
    i8 = torch.tensor([-128, 0, 127], dtype=torch.int8)
    u8 = torch.arange(0, 250, 25, dtype=torch.uint8)
    boolean = torch.tensor([True, False, True])
    scalar = torch.tensor(2.5)
    empty = torch.zeros(0, 4)
    tensors = {
        "model.embed_tokens.weight": ("F32", f32.shape, raw_bytes(f32)),
        "f64": ("F64", f64.shape, raw_bytes(f64)),
        "layers.0.f16": ("F16", f16.shape, raw_bytes(f16)),
        "layers.0.bf16": ("BF16", bf16.shape, raw_bytes(bf16)),
        "i64": ("I64", i64.shape, raw_bytes(i64)),
        "i32": ("I32", i32.shape, raw_bytes(i32)),
        "i16": ("I16", i16.shape, raw_bytes(i16)),
        "i8": ("I8", i8.shape, raw_bytes(i8)),
        "u8": ("U8", u8.shape, raw_bytes(u8)),
        "bool": ("BOOL", boolean.shape, raw_bytes(boolean)),
        "scalar": ("F32", scalar.shape, raw_bytes(scalar)),
        "empty": ("F32", empty.shape, b""),
        "fp8": ("F8_E4M3", (4,), bytes([0x00, 0x38, 0xb8, 0x7e])),  # 0, 1, -1, 448
        "10": ("U16", (2,), struct.pack("<HH", 1, 65535)),
    }
    # Data order differs from both key order and dict order.
    order = ["i8", "layers.0.bf16", "10", "empty", "model.embed_tokens.weight", "f64", "u8", "scalar",
             "layers.0.f16", "bool", "i64", "i32", "fp8", "i16"]
    blob = write_file(tensors, {"format": "pt", "note": "written by gen_safetensors.py"}, order)
    parse_file(blob, "fixture")  # self-check
    fx = {
        "source": "tests/reference/gen_safetensors.py: safetensors written from the spec with torch tensors",
        "torch": torch.__version__,
        "meta": {
            "file_b64": base64.b64encode(blob).decode("ascii"),
            "order": order,
            "dtypes": {k: v[0] for k, v in tensors.items()},
            "shapes": {k: list(v[1]) for k, v in tensors.items()},
            "raw_hex": {k: v[2].hex() for k, v in tensors.items()},
            "i64": [str(x) for x in i64.flatten().tolist()],
        },
        "tensors": {},
    }
    fx["tensors"] = {k: common.tensor(v) for k, v in
                     {"f32": f32, "f16": f16, "bf16": bf16, "i32": i32, "u8": u8}.items()}
    return {"safetensors_torch": fx}


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--check":
        results = {}
        for path in sys.argv[2:]:
            with open(path, "rb") as f:
                results[path] = parse_file(f.read(), path)
        print(json.dumps(results))
    else:
        print(__doc__)
        sys.exit(2)
