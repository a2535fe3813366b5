"""Embedding fixtures: torch.nn.functional.embedding forward/backward (repeated ids, bf16 table),
and the NEFTune magnitude of transformers' neftune_post_forward_hook
(src/transformers/trainer_utils.py: mag_norm = alpha / sqrt(output.size(1) * output.size(2)))."""
import torch
import torch.nn.functional as F

import common


def main():
    common.seed(41)
    vocab, hidden, tokens = 50, 72, 23
    w_stored = torch.randn(vocab, hidden).to(torch.bfloat16)
    ids = torch.randint(0, vocab, (tokens,))
    ids[:5] = torch.tensor([7, 7, 7, 0, vocab - 1])  # repeats and both ends of the table
    d_out = torch.randn(tokens, hidden)
    w = w_stored.float().clone().requires_grad_(True)
    out = F.embedding(ids, w)
    out.backward(d_out)
    # NEFTune on a [batch 2, seq 9, hidden 72] output with alpha 5.
    alpha, seq = 5.0, 9
    mag = (alpha / torch.sqrt(torch.tensor(seq * hidden))).item()
    fx = common.fixture("torch F.embedding autograd; NEFTune mag from neftune_post_forward_hook",
                        {"vocab": vocab, "hidden": hidden, "tokens": tokens, "neftuneAlpha": alpha,
                         "neftuneSeqLen": seq, "neftuneMag": mag},
                        {"w": w_stored, "ids": ids.to(torch.int32), "dOut": d_out, "out": out, "dW": w.grad})
    return {"embedding": fx}
