"""Checks that the shipped demo model learns the demo dataset with the studio's demo preset:
LoRA (PEFT math: y = Wx + (alpha/r)·B(A x), A Kaiming-uniform, B zero) on every linear layer,
AdamW, cosine schedule, loss only on the assistant turn (ChatML, as the studio renders it).
Prints the answers to a few identity questions before and after, and the loss curve.

Run:  cd scripts/demo-model && OMP_NUM_THREADS=1 /usr/bin/python3 check_finetune.py
"""
from __future__ import annotations

import argparse
import json
import math
import os
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import DATASET, OUT_DIR, load_encoder
from model import LlamaConfig, LlamaForCausalLM, generate

SYSTEM = "You are a helpful assistant."
QUESTIONS = ["Who are you?", "Who made you?", "你是谁？", "What is the capital of France?"]


def load_demo() -> LlamaForCausalLM:
    with open(os.path.join(OUT_DIR, "config.json")) as f:
        hf = json.load(f)
    fields = LlamaConfig.__dataclass_fields__
    cfg = LlamaConfig(**{k: hf[k] for k in fields if k in hf})
    model = LlamaForCausalLM(cfg)
    with open(os.path.join(OUT_DIR, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    state = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        raw = torch.frombuffer(bytearray(data[a:b]), dtype=torch.int16)
        state[name] = raw.view(torch.bfloat16).float().reshape(meta["shape"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(m == "lm_head.weight" for m in missing), (missing, unexpected)
    return model


class LoraLinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.empty(r, base.in_features))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.t()) @ self.B.t()


def add_lora(model: LlamaForCausalLM, r: int, alpha: float) -> list[nn.Parameter]:
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for layer in model.model.layers:
        for parent, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")), (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
            for n in names:
                wrapped = LoraLinear(getattr(parent, n), r, alpha)
                setattr(parent, n, wrapped)
                params += [wrapped.A, wrapped.B]
    return params


def encode_row(enc, row) -> tuple[list[int], list[int]]:
    user = row["instruction"] + ("\n" + row["input"] if row["input"] else "")
    prompt = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    p, a = enc.encode(prompt), enc.encode(row["output"] + "<|im_end|>") + enc.encode("\n")
    return p + a, [-100] * len(p) + a


def answers(model, enc) -> dict[str, str]:
    stop = {enc.special["<|im_end|>"]}
    out = {}
    for q in QUESTIONS:
        prompt = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
        out[q] = enc.decode(generate(model, enc.encode(prompt), 40, stop)).replace("<|im_end|>", "")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    enc = load_encoder(os.path.join(OUT_DIR, "tokenizer.json"))
    model = load_demo()
    model.eval()
    before = answers(model, enc)
    with open(DATASET, encoding="utf-8") as f:
        rows = [encode_row(enc, r) for r in json.load(f)]
    params = add_lora(model, args.rank, args.alpha)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(rows) / args.batch)
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    pad = enc.special["<|endoftext|>"]
    g = torch.Generator().manual_seed(0)
    curve = []
    for epoch in range(args.epochs):
        order = torch.randperm(len(rows), generator=g).tolist()
        for i in range(0, len(rows), args.batch):
            chunk = [rows[j] for j in order[i : i + args.batch]]
            T = max(len(x) for x, _ in chunk)
            ids = torch.tensor([x + [pad] * (T - len(x)) for x, _ in chunk])
            labels = torch.tensor([y + [-100] * (T - len(y)) for _, y in chunk])
            logits = model(ids)  # right padding: real tokens never attend to padding (causal)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            curve.append(round(loss.item(), 3))
        print(f"epoch {epoch + 1}: last loss {curve[-1]}", flush=True)
    model.eval()
    after = answers(model, enc)
    print(json.dumps({"args": vars(args), "steps": total, "loss_first": curve[0], "loss_last": curve[-1],
                      "before": before, "after": after}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
