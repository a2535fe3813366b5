"""Cross-entropy fixtures: torch.nn.functional.cross_entropy(reduction='sum', ignore_index=-100)
divided by the number of non-ignored labels (transformers ForCausalLMLoss with
num_items_in_batch, src/transformers/loss/loss_utils.py), with autograd for dLogits.
The Qwen2 vocabulary case (V = 151936) stores sampled gradient entries to keep the file small;
its logits come from an integer hash that tests/cpu/cross_entropy.ts reproduces exactly."""
import torch
import torch.nn.functional as F

import common


def hashed_logits(n, salt, spread):
    i = torch.arange(n, dtype=torch.int64) + salt
    h = (i * 2654435761) % 4294967296
    return ((h.double() / 4294967296 - 0.5) * spread).float()


def run(logits, labels):
    x = logits.clone().requires_grad_(True)
    count = int((labels != -100).sum())
    per_row = F.cross_entropy(x, labels.long(), ignore_index=-100, reduction="none")
    loss = F.cross_entropy(x, labels.long(), ignore_index=-100, reduction="sum") / count
    loss.backward()
    return per_row.detach(), loss.detach(), x.grad, count


def main():
    common.seed(51)
    rows, vocab = 9, 1000
    logits = torch.randn(rows, vocab) * 4
    logits[2, 17] = 40.0  # a confident row
    labels = torch.tensor([3, -100, 17, 0, vocab - 1, -100, 500, 17, 999], dtype=torch.int32)
    per_row, loss, grad, count = run(logits, labels)
    small = common.fixture("torch F.cross_entropy sum / count, autograd", {"rows": rows, "vocab": vocab, "count": count},
                           {"logits": logits, "labels": labels, "rowLoss": per_row, "loss": loss, "grad": grad})

    rows, vocab = 3, 151936
    logits = hashed_logits(rows * vocab, 7, 30.0).view(rows, vocab)
    labels = torch.tensor([151935, -100, 12345], dtype=torch.int32)
    per_row, loss, grad, count = run(logits, labels)
    g = torch.Generator().manual_seed(5)
    sample = torch.randint(0, rows * vocab, (3000,), generator=g)
    sample = torch.cat([sample, torch.tensor([151935, vocab * 2 + 12345, vocab + 5])])
    big = common.fixture("torch F.cross_entropy sum / count, autograd; V=151936 (Qwen2), sampled grad",
                         {"rows": rows, "vocab": vocab, "count": count, "salt": 7, "spread": 30.0},
                         {"labels": labels, "rowLoss": per_row, "loss": loss,
                          "sampleIndex": sample.to(torch.int32), "sampleGrad": grad.view(-1)[sample]})
    return {"cross_entropy_small": small, "cross_entropy_qwen_vocab": big}
