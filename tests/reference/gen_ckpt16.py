"""bf16 gradient checkpoints (src/engine/model/decoder.ts checkpointPrecision 'bf16'): the tiny
Llama of gen_engine.py with the residual stream rounded to bf16 at every layer boundary (the
engine's f32 value rounded to nearest even, as torch's .to(bfloat16)), the rounding passed
straight through in the backward, as the engine's recompute-from-the-kept-input does."""
import torch

import common
import gen_engine as E

D64 = torch.float64


def keep_bf16(h):
    # The engine rounds its f32 value: round f64 → f32 → bf16, straight-through gradient.
    r = h.detach().to(torch.float32).to(torch.bfloat16).to(D64)
    return h + (r - h.detach())


def llama_ckpt16_case():
    g = common.seed(1234)
    cfg = E.llama_config()
    W32 = E.random_weights(cfg, g, bias=False)
    B, T = 2, 9
    lengths = [9, 6]
    ids = torch.randint(1, cfg["vocab_size"], (B * T,), generator=g)
    labels = ids.clone()
    labels[0:3] = -100
    labels[T:T + 2] = -100
    for b, L in enumerate(lengths):
        ids[b * T + L:(b + 1) * T] = 0
        labels[b * T + L:(b + 1) * T] = -100
    pos = torch.arange(T).repeat(B)
    seg = E.segments_padded(lengths, T)
    r, alpha = 4, 8.0
    lora32 = E.lora_init(cfg, g, r, True)
    W = E.to64(W32)
    lora = {k: (A.to(D64).requires_grad_(True), Bm.to(D64).requires_grad_(True)) for k, (A, Bm) in lora32.items()}
    logits = E.forward(cfg, W, lora, alpha / r, ids, pos, seg, keep=keep_bf16)
    s, count = E.loss_sum(logits, E.shift_labels(labels, B, T))
    loss = s / count
    loss.backward()
    t = {"ids": ids.to(torch.int32), "labels": labels.to(torch.int32), "positions": pos.to(torch.int32),
         "segments": seg.to(torch.int32), "logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for k, v in W32.items():
        t[f"w:{k}"] = v
    for k, (A, Bm) in lora32.items():
        t[f"lora_A:{k}"] = A
        t[f"lora_B:{k}"] = Bm
        t[f"grad_A:{k}"] = lora[k][0].grad
        t[f"grad_B:{k}"] = lora[k][1].grad
    meta = {"config": cfg, "B": B, "T": T, "rank": r, "alpha": alpha, "count": count, "lengths": lengths}
    return common.fixture("tests/reference/gen_ckpt16.py llama_ckpt16_case", meta, t)


def main():
    torch.set_default_dtype(torch.float32)
    return {"engine_llama_ckpt16": llama_ckpt16_case()}
