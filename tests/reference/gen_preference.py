"""Preference-tuning runs (DPO sigmoid with label smoothing, hinge, IPO, ORPO, SimPO; pref_ftx) on
the tiny Llama and Qwen2 of gen_engine.py, written independently from the papers and TRL's
definitions (f64 autograd is the truth):
  DPO (Rafailov et al. 2023): z = (c - r) - (c0 - r0) with summed label log-probs of the policy
    (c, r) and of the reference (c0, r0: the same model with the LoRA adapters switched off);
    loss -(1-eps) logsig(beta z) - eps logsig(-beta z) (cDPO label smoothing, TRL "sigmoid");
  hinge (SLiC, TRL "hinge"): relu(1 - beta z);
  IPO (Azar et al. 2023, TRL "ipo"): (z - 1/(2 beta))^2 over per-token *average* log-probs;
  SimPO (Meng et al. 2024): -logsig(beta (c_avg - r_avg) - gamma), no reference;
  ORPO (Hong et al. 2024): -c_avg + beta * -logsig(log odds c - log odds r), odds p/(1-p) of the
    average-token probability, no reference;
  pref_ftx adds ftx * (-c_sum / |chosen labels|) (LLaMA-Factory's sft term).
Rewards beta (c - c0), beta (r - r0) (beta c, beta r without a reference); accuracy = share of
pairs with chosen reward > rejected reward. A micro-batch holds its pairs as rows: every chosen
answer, then every rejected one; its loss is the mean over pairs, each micro-batch's loss is
divided by the accumulation steps (HF Trainer without num_items_in_batch), then clipping,
AdamW and a cosine schedule as gen_engine.train_run. Dropout is off (TRL disables it).
"""
import math

import torch
import torch.nn.functional as F

import common
from gen_engine import (D64, cosine_lambda, forward, llama_config, lora_init, qwen2_config, random_weights,
                        segments_padded, shift_labels, to64)

TARGETS = ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]
GRAD_STEPS = 3  # LoRA gradients stored for the first steps (the curve covers every step)


def make_pairs(g, V, n):
    """n pairs: a shared prompt (masked) and two different answers."""
    pairs = []
    for _ in range(n):
        P = int(torch.randint(2, 6, (1,), generator=g))
        prompt = torch.randint(1, V, (P,), generator=g)
        answers = []
        for _ in range(2):
            L = int(torch.randint(2, 7, (1,), generator=g))
            answers.append(torch.randint(1, V, (L,), generator=g))
        seqs = []
        for a in answers:
            ids = torch.cat([prompt, a])
            lab = ids.clone()
            lab[:P] = -100
            seqs.append((ids, lab))
        pairs.append(seqs)
    return pairs


def collate_pairs(pairs):
    """All chosen rows, then all rejected rows, right-padded to the longest."""
    rows = [p[0] for p in pairs] + [p[1] for p in pairs]
    T = max(r[0].numel() for r in rows)
    B = len(rows)
    ids = torch.zeros(B * T, dtype=torch.long)
    lab = torch.full((B * T,), -100, dtype=torch.long)
    for b, (i, l) in enumerate(rows):
        ids[b * T:b * T + i.numel()] = i
        lab[b * T:b * T + l.numel()] = l
    return ids, lab, B, T, [r[0].numel() for r in rows]


def sequence_logps(logits, shifted, B, T):
    """Sum over labelled positions of log_softmax(logits)[label] per row, and the label counts."""
    lp = torch.log_softmax(logits, dim=-1)
    valid = shifted != -100
    tok = torch.gather(lp, 1, shifted.clamp(min=0)[:, None])[:, 0] * valid
    return tok.view(B, T).sum(-1), valid.view(B, T).sum(-1).to(D64)


def pair_loss(kind, beta, eps, gamma, ftx, c_sum, r_sum, c_len, r_len, c0_sum=None, r0_sum=None):
    """Per-pair losses, rewards and the logged log-probs (avg for ipo/orpo/simpo, as TRL logs them)."""
    avg = kind in ("ipo", "orpo", "simpo")
    c = c_sum / c_len if avg else c_sum
    r = r_sum / r_len if avg else r_sum
    sft = -c_sum / c_len
    extra = {}
    if kind in ("sigmoid", "hinge", "ipo"):
        c0 = c0_sum / c_len if avg else c0_sum
        r0 = r0_sum / r_len if avg else r0_sum
        z = (c - r) - (c0 - r0)
        if kind == "sigmoid":
            losses = -(1 - eps) * F.logsigmoid(beta * z) - eps * F.logsigmoid(-beta * z)
        elif kind == "hinge":
            losses = torch.relu(1 - beta * z)
        else:
            losses = (z - 1 / (2 * beta)) ** 2
        rc, rr = beta * (c - c0).detach(), beta * (r - r0).detach()
    elif kind == "simpo":
        losses = -F.logsigmoid(beta * (c - r) - gamma)
        rc, rr = beta * c.detach(), beta * r.detach()
    else:  # orpo
        log_odds_c = c - torch.log(1 - torch.exp(c))
        log_odds_r = r - torch.log(1 - torch.exp(r))
        losses = -c - beta * F.logsigmoid(log_odds_c - log_odds_r)
        rc, rr = beta * c.detach(), beta * r.detach()
    if ftx > 1e-6:
        losses = losses + ftx * sft
    if kind == "orpo":
        extra = {"sft_loss": float(sft.mean()), "odds_ratio_loss": float(((losses - sft) / beta).mean())}
    metrics = {"rewards/chosen": float(rc.mean()), "rewards/rejected": float(rr.mean()),
               "rewards/accuracies": float((rc > rr).to(D64).mean()), "rewards/margins": float((rc - rr).mean()),
               "logps/chosen": float(c.detach().mean()), "logps/rejected": float(r.detach().mean()), **extra}
    return losses.mean(), metrics


def run(cfg, Wbase, g, kind, steps, beta=0.1, eps=0.0, gamma=0.5, ftx=0.0, r=4, alpha=8.0, lr=5e-3, warmup=3,
        accum=2, pairs_per_mb=2, max_norm=1.0, wd=0.01):
    pairs = make_pairs(g, cfg["vocab_size"], 4 * pairs_per_mb)
    mbs = [collate_pairs(pairs[pairs_per_mb * j:pairs_per_mb * (j + 1)]) for j in range(4)]
    lora32 = {k: v for k, v in lora_init(cfg, g, r, False).items() if k.split(".")[-1] in TARGETS}
    lora = {k: (A.to(D64).clone().requires_grad_(True), Bm.to(D64).clone().requires_grad_(True))
            for k, (A, Bm) in lora32.items()}
    W = to64(Wbase)
    params = [p for pair in lora.values() for p in pair]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lambda(s, warmup, steps))
    uses_ref = kind in ("sigmoid", "hinge", "ipo")
    hist = {"losses": [], "grad_norms": [], "lrs": []}
    t = {}
    for s in range(steps):
        window = [mbs[(accum * s + j) % 4] for j in range(accum)]
        opt.zero_grad()
        total, mets = 0.0, []
        for ids, lab, B, T, lengths in window:
            P = B // 2
            pos = torch.arange(T).repeat(B)
            seg = segments_padded(lengths, T)
            sh = shift_labels(lab, B, T)
            logits = forward(cfg, W, lora, alpha / r, ids, pos, seg)
            lp, n = sequence_logps(logits, sh, B, T)
            ref = [None, None]
            if uses_ref:
                with torch.no_grad():
                    lp0, _ = sequence_logps(forward(cfg, W, None, 0.0, ids, pos, seg), sh, B, T)
                ref = [lp0[:P], lp0[P:]]
            loss, m = pair_loss(kind, beta, eps, gamma, ftx, lp[:P], lp[P:], n[:P], n[P:], *ref)
            (loss / accum).backward()
            total += float(loss) / accum
            mets.append(m)
        if s < GRAD_STEPS:
            for k, (A, Bm) in lora.items():
                t[f"step{s}_grad_A:{k}"] = A.grad.detach().clone()
                t[f"step{s}_grad_B:{k}"] = Bm.grad.detach().clone()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        hist["lrs"].append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        hist["losses"].append(total)
        hist["grad_norms"].append(float(norm))
        for key in mets[0]:
            hist.setdefault(f"metric:{key}", []).append(sum(m[key] for m in mets) / len(mets))
    for j, (ids, lab, B, T, lengths) in enumerate(mbs):
        t[f"mb{j}_ids"] = ids.to(torch.int32)
        t[f"mb{j}_labels"] = lab.to(torch.int32)
        t[f"mb{j}_lengths"] = torch.tensor(lengths, dtype=torch.int32)
    for k, (A, Bm) in lora32.items():
        t[f"lora_A:{k}"] = A
        t[f"final_A:{k}"] = lora[k][0].detach()
        t[f"final_B:{k}"] = lora[k][1].detach()
    for k, v in hist.items():
        t[k] = torch.tensor(v, dtype=D64)
    meta = {"config": cfg, "steps": steps, "targets": TARGETS, "rank": r, "alpha": alpha, "lr": lr, "warmup": warmup,
            "accum": accum, "pairs": pairs_per_mb, "max_norm": max_norm, "weight_decay": wd, "grad_steps": GRAD_STEPS,
            "pref": {"loss": kind, "beta": beta, "ftx": ftx, "labelSmoothing": eps, "simpoGamma": gamma},
            "metrics": [k[7:] for k in hist if k.startswith("metric:")],
            "window_rule": "window s = micro-batches (accum*s + j) % 4"}
    return t, meta


def case(model, kind, seed, steps, **kw):
    cfg = llama_config() if model == "llama" else qwen2_config()
    if model == "llama":
        W = random_weights(cfg, common.seed(1234), bias=False)  # the weights of fixture engine_llama
    else:
        Wf = random_weights(cfg, common.seed(4321), bias=True)  # the weights of fixture engine_qwen2 (bf16)
        W = {k: v.to(torch.bfloat16).float() for k, v in Wf.items()}
    t, meta = run(cfg, W, common.seed(seed), kind, steps, **kw)
    meta["weights"] = f"engine_{model}"
    return common.fixture(f"tests/reference/gen_preference.py case({model!r}, {kind!r})", meta, t)


def main():
    torch.set_default_dtype(torch.float32)
    return {
        "pref_llama_sigmoid": case("llama", "sigmoid", 11, 20),
        "pref_qwen2_sigmoid": case("qwen2", "sigmoid", 12, 20, eps=0.1, ftx=0.3, beta=0.2),
        "pref_llama_ipo": case("llama", "ipo", 13, 6),
        "pref_qwen2_hinge": case("qwen2", "hinge", 14, 6, beta=0.5),
        "pref_llama_orpo": case("llama", "orpo", 15, 6, beta=0.25),
        "pref_qwen2_simpo": case("qwen2", "simpo", 16, 6, beta=2.0, gamma=0.5),
    }
