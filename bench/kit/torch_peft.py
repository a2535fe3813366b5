"""The PyTorch side of the GPU kit: the same LoRA training steps as Tabtune's (bench/kit/main.ts
`train`) on the same random checkpoint, adapters and tokens written by `prepare`, with
transformers + PEFT as a LLaMA-Factory user runs them (AutoModelForCausalLM, attn_implementation
"sdpa", peft.get_peft_model with r 8 / alpha 16 / dropout 0 on all seven linear modules, non-
reentrant gradient checkpointing, torch.optim.AdamW lr 1e-4 no weight decay, bf16 autocast as the
HF Trainer's bf16=True does). Modes: bf16 (bf16 base, f32 adapters: PEFT's autocast_adapter_dtype),
f32 (f32 base), qlora (bitsandbytes NF4 + double quant, bf16 compute; needs bitsandbytes).

Per mode: per-step loss and wall time, tokens/s (median of the steps after the first),
torch.cuda.max_memory_allocated. The JSON is rewritten after each mode, so a run cut short by its
time box still reports the finished modes.

With --tiny and no transformers/peft installed (the CPU test machine), a plain PyTorch Qwen2 +
LoRA (written from transformers' models/qwen2/modeling_qwen2.py and PEFT's lora/layer.py:
y = W x + b + (alpha/r) B A x) runs the same steps instead, and the JSON says so.

Usage: python3 torch_peft.py --dir MODEL_DIR --out OUT.json [--modes bf16,f32,qlora] [--steps 4]
       [--device cuda|cpu] [--budget-s 60] [--ckpt on|off] [--tiny]
"""
import argparse
import gc
import json
import struct
import sys
import time

import torch

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
START = time.time()


def read_safetensors(path):
    """F32 / BF16 tensors of one safetensors file (u64 header length, JSON header, data)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        b, e = h["data_offsets"]
        if h["dtype"] == "F32":
            t = torch.frombuffer(data, dtype=torch.float32, count=(e - b) // 4, offset=b)
        elif h["dtype"] == "BF16":
            t = torch.frombuffer(data, dtype=torch.int16, count=(e - b) // 2, offset=b)
            t = (t.to(torch.int32) << 16).view(torch.float32)
        else:
            raise ValueError(f"{path}: tensor {name} has dtype {h['dtype']}, expected F32 or BF16")
        out[name] = t.reshape(h["shape"]).clone()
    return out


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# transformers + PEFT


def hf_model(model_dir, mode, device, ckpt):
    import transformers
    from transformers import AutoModelForCausalLM

    # transformers 4.56 renamed from_pretrained's torch_dtype to dtype
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    dtype_key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    kw = {"attn_implementation": "sdpa"}
    if mode == "qlora":
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kw["device_map"] = {"": 0}
        kw[dtype_key] = torch.bfloat16
    else:
        kw[dtype_key] = torch.bfloat16 if mode == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kw)
    if mode != "qlora":
        model = model.to(device)
    model.config.use_cache = False
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def attach_peft(model, lora, rank, alpha):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=LINEARS, bias="none",
                     task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    done = 0
    for name, mod in model.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            key = name[len("base_model.model."):] if name.startswith("base_model.model.") else name
            with torch.no_grad():
                mod.lora_A["default"].weight.copy_(lora[f"{key}.lora_A"])
                mod.lora_B["default"].weight.copy_(lora[f"{key}.lora_B"])
            done += 1
    if done != len(lora) // 2:
        raise RuntimeError(f"set {done} PEFT LoRA modules, the adapter file holds {len(lora) // 2}")
    return model


# ---------------------------------------------------------------------------------------------
# plain PyTorch (--tiny without transformers)


class PlainQwen2(torch.nn.Module):
    def __init__(self, cfg, weights, lora, scale, dtype):
        super().__init__()
        self.cfg = cfg
        self.w = {k: v.to(dtype) for k, v in weights.items()}
        self.lora = torch.nn.ParameterDict()
        for k, v in lora.items():
            self.lora[k.replace(".", "__")] = torch.nn.Parameter(v.clone().float())
        self.scale = scale
        self.dtype = dtype

    def lin(self, x, name):
        y = x @ self.w[f"{name}.weight"].T
        if f"{name}.bias" in self.w:
            y = y + self.w[f"{name}.bias"]
        a = self.lora[f"{name}.lora_A".replace(".", "__")]
        b = self.lora[f"{name}.lora_B".replace(".", "__")]
        return y + (self.scale * ((x.float() @ a.T) @ b.T)).to(self.dtype)

    @staticmethod
    def rms(x, w, eps):
        xf = x.float()
        return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    def forward(self, ids, labels):
        cfg, W = self.cfg, self.w
        H, Hq, Hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
        D = cfg.get("head_dim") or H // Hq
        eps = cfg["rms_norm_eps"]
        N = ids.numel()
        inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
        emb = torch.cat([torch.arange(N).float()[:, None] * inv[None, :]] * 2, dim=-1)
        cos, sin = emb.cos()[:, None, :].to(self.dtype), emb.sin()[:, None, :].to(self.dtype)
        causal = torch.ones(N, N, dtype=torch.bool).tril()

        def rot(x):
            h = x.shape[-1] // 2
            return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

        h = W["model.embed_tokens.weight"][ids]
        for layer in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{layer}"
            x = self.rms(h, W[f"{p}.input_layernorm.weight"], eps)
            q = self.lin(x, f"{p}.self_attn.q_proj").view(N, Hq, D)
            k = self.lin(x, f"{p}.self_attn.k_proj").view(N, Hkv, D)
            v = self.lin(x, f"{p}.self_attn.v_proj").view(N, Hkv, D)
            q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
            k = k.repeat_interleave(Hq // Hkv, dim=1)
            v = v.repeat_interleave(Hq // Hkv, dim=1)
            s = torch.einsum("nhd,mhd->hnm", q.float(), k.float()) * (D ** -0.5)
            s = s.masked_fill(~causal[None], float("-inf"))
            o = torch.einsum("hnm,mhd->nhd", torch.softmax(s, dim=-1), v.float()).to(self.dtype).reshape(N, Hq * D)
            h = h + self.lin(o, f"{p}.self_attn.o_proj")
            x = self.rms(h, W[f"{p}.post_attention_layernorm.weight"], eps)
            g = self.lin(x, f"{p}.mlp.gate_proj")
            h = h + self.lin(torch.nn.functional.silu(g) * self.lin(x, f"{p}.mlp.up_proj"), f"{p}.mlp.down_proj")
        h = self.rms(h, W["model.norm.weight"], eps)
        logits = (h @ W.get("lm_head.weight", W["model.embed_tokens.weight"]).T).float()
        return torch.nn.functional.cross_entropy(logits[:-1], labels[1:])


# ---------------------------------------------------------------------------------------------


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--modes", default="bf16,f32,qlora")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget-s", type=float, default=60)
    ap.add_argument("--ckpt", default="on")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    report = {"section": "torch", "status": "running", "modes": {}, "torch": torch.__version__}

    def save():
        report["seconds"] = round(time.time() - START, 1)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)

    try:
        run(args, report, save)
        report["status"] = "ok"
    except Exception as e:  # noqa: BLE001 — the error goes into the report; the kit goes on
        import traceback

        report["status"] = "error"
        report["error"] = traceback.format_exc()
        print(f"torch: {e}", file=sys.stderr)
    save()


def run(args, report, save):
    if args.device == "cpu":
        torch.set_num_threads(2)
    cfg = json.load(open(f"{args.dir}/config.json"))
    batch = json.load(open(f"{args.dir}/batch.json"))
    lora = read_safetensors(f"{args.dir}/lora.safetensors")
    rank, alpha, seq = batch["rank"], batch["alpha"], batch["seq"]
    ids = torch.tensor(batch["ids"], dtype=torch.long)
    labels = torch.tensor(batch["labels"], dtype=torch.long)
    ckpt = args.ckpt == "on"
    try:
        import peft  # noqa: F401
        import transformers

        impl = f"transformers {transformers.__version__} + peft {peft.__version__}"
        plain = False
    except ImportError as e:
        if not args.tiny:
            raise RuntimeError(f"transformers and peft are needed on the GPU machine ({e})") from e
        impl = f"plain PyTorch Qwen2 + LoRA (transformers/peft not installed: {e})"
        plain = True
    report.update({"implementation": impl, "device": args.device, "seq": seq, "batch": 1, "rank": rank,
                   "alpha": alpha, "gradientCheckpointing": ckpt and not plain,
                   "attention": "manual softmax (plain)" if plain else "sdpa"})
    if args.device == "cuda":
        report["gpu"] = torch.cuda.get_device_name(0)
        report["tf32"] = torch.backends.cuda.matmul.allow_tf32
    weights = read_safetensors(f"{args.dir}/model.safetensors") if plain else None
    for mode in [m for m in args.modes.split(",") if m]:
        row = {"mode": mode}
        report["modes"][mode] = row
        if time.time() - START > args.budget_s - 5:
            row["status"] = "skipped: section time box spent"
            save()
            continue
        try:
            run_mode(args, cfg, mode, row, plain, weights, lora, rank, alpha, ids, labels, ckpt, save)
            row["status"] = "ok"
        except ImportError as e:
            row["status"] = f"skipped: {e}"
        except Exception as e:  # noqa: BLE001
            row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
        save()


def run_mode(args, cfg, mode, row, plain, weights, lora, rank, alpha, ids, labels, ckpt, save):
    device = args.device
    cuda = device == "cuda"
    if mode == "qlora":
        if plain or not cuda:
            raise ImportError("QLoRA needs transformers, peft, bitsandbytes and CUDA")
        import bitsandbytes  # noqa: F401
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    dtype = torch.float32 if mode == "f32" else torch.bfloat16
    if plain:
        model = PlainQwen2(cfg, weights, lora, alpha / rank, dtype).to(device)
    else:
        model = attach_peft(hf_model(args.dir, mode, device, ckpt), lora, rank, alpha)
    model.train()
    row["loadSeconds"] = round(time.time() - t0, 1)
    if cuda:
        row["memoryAfterLoad"] = torch.cuda.memory_allocated()
    params = [p for p in model.parameters() if p.requires_grad]
    row["trainableParams"] = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    x, y = ids.to(device)[None], labels.to(device)[None]
    autocast = mode != "f32" and not plain
    steps = []
    row["steps"] = steps
    for i in range(args.steps):
        last = steps[-1]["ms"] / 1000 if steps else 0
        if i > 0 and time.time() - START > args.budget_s - 3 * last - 2:
            break
        sync(device)
        s0 = time.time()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
            loss = model(x[0], y[0]) if plain else model(input_ids=x, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        steps.append({"loss": float(loss), "ms": round((time.time() - s0) * 1000, 1)})
        timed = [s["ms"] for s in steps[1:]] or [steps[0]["ms"]]
        row.update({"loss": steps[0]["loss"], "stepMs": median(timed), "stepMsIncludesCompile": len(steps) == 1,
                    "tokensPerS": round(ids.numel() / median(timed) * 1000, 1)})
        if cuda:
            row["maxMemoryAllocated"] = torch.cuda.max_memory_allocated()
        save()
    del model, opt, params


if __name__ == "__main__":
    main()
