"""Merges the GPU kit's section files into the one JSON that run.sh leaves in OUTDIR.

Each section wrote SECTIONS/NAME.json itself (bench/kit/main.ts, torch_peft.py); run.sh wrote
SECTIONS/NAME.run (exit status, wall seconds, time box) and SECTIONS/NAME.log (stderr). A section
whose process died or was killed keeps what it had written, with its status set to "timeout" or
"error". The summary puts our numbers beside PyTorch + PEFT's: tokens/s ratio, loss differences
per step, and the best f32 matmul GFLOP/s per size.

Usage: python3 report.py SECTIONS_DIR OUT.json MACHINE.tsv MANIFEST.json MODE
"""
import json
import os
import sys
import time


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"status": "error", "error": f"no readable section file ({e})"}


def tail(path, n=3000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def section(sdir, name):
    run = {}
    try:
        for line in open(os.path.join(sdir, f"{name}.run")):
            k, _, v = line.rstrip("\n").partition("\t")
            run[k] = v
    except OSError:
        pass
    if run.get("skipped"):
        return {"status": "skipped", "reason": run["skipped"]}
    s = read_json(os.path.join(sdir, f"{name}.json"))
    rc = int(run.get("rc", "0") or 0)
    s["exitStatus"] = rc
    s["wallSeconds"] = float(run.get("seconds", "0") or 0)
    s["timeBoxSeconds"] = float(run.get("timebox", "0") or 0)
    if rc in (124, 137):
        s["status"] = "timeout"
        s["error"] = s.get("error") or f"killed after its {run.get('timebox')} s time box; parts above are complete"
    elif rc != 0 and s.get("status") in (None, "running", "ok"):
        s["status"] = "error"
        s.setdefault("error", f"exit status {rc}")
    if s.get("status") != "ok":
        s["logTail"] = tail(os.path.join(sdir, f"{name}.log"))
    return s


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def compare(ours, torch_mode):
    """Loss per step, ours against PyTorch's (same weights, adapters, tokens and AdamW)."""
    a = [s["loss"] for s in ours.get("steps", [])]
    b = [s["loss"] for s in torch_mode.get("steps", [])]
    n = min(len(a), len(b))
    if not n:
        return None
    return {
        "steps": n,
        "ours": a[:n],
        "torch": b[:n],
        "absDiff": [abs(a[i] - b[i]) for i in range(n)],
        "relDiff": [rel(a[i], b[i]) for i in range(n)],
    }


def summarise(sections):
    out = {}
    mm = sections.get("matmul", {})
    if mm.get("rows"):
        out["matmulGflops"] = {
            str(r["size"]): {
                "best": max([g for g in r["gflops"].values() if isinstance(g, (int, float))], default=None),
                "tuned": r["gflops"].get("tuned"),
                "tunerPick": (r.get("tuned") or {}).get("chosen"),
            }
            for r in mm["rows"]
        }
    models = sorted({k.split(".", 1)[1].rsplit(".", 1)[0] for k in sections if k.startswith("train.")})
    for m in models:
        row = {}
        t = sections.get(f"torch.{m}", {}).get("modes", {})
        for method, torch_mode in (("lora", "bf16"), ("lora", "f32"), ("qlora", "qlora")):
            ours = sections.get(f"train.{m}.{method}", {})
            if ours.get("tokensPerS") is not None:
                row[f"{method}TokensPerS"] = ours["tokensPerS"]
                row[f"{method}LedgerPeakTotal"] = ours.get("ledgerPeakTotal")
            tm = t.get(torch_mode, {})
            if tm.get("tokensPerS") is not None:
                row[f"torch_{torch_mode}_TokensPerS"] = tm["tokensPerS"]
                row[f"torch_{torch_mode}_MaxMemoryAllocated"] = tm.get("maxMemoryAllocated")
                if ours.get("tokensPerS"):
                    row[f"{method}_vs_torch_{torch_mode}_speed"] = round(ours["tokensPerS"] / tm["tokensPerS"], 4)
            c = compare(ours, tm)
            if c:
                row[f"{method}_vs_torch_{torch_mode}_lossRelDiff"] = c["relDiff"]
        dec = sections.get(f"train.{m}.lora", {}).get("decode")
        if dec:
            row["decodeMsPerToken"] = dec.get("msPerToken")
        out[m] = row
    return out


def main():
    sdir, out_path, machine_path, manifest_path, mode = sys.argv[1:6]
    order = [line.strip() for line in open(os.path.join(sdir, "order")) if line.strip()]
    sections = {name: section(sdir, name) for name in order}
    # each PyTorch section gets its loss comparison against our steps on the same model
    for name, s in sections.items():
        if name.startswith("torch.") and isinstance(s.get("modes"), dict):
            m = name.split(".", 1)[1]
            for mode_name, tm in s["modes"].items():
                ours = sections.get(f"train.{m}.{'qlora' if mode_name == 'qlora' else 'lora'}", {})
                c = compare(ours, tm)
                if c:
                    tm["vsOurs"] = c
    machine = {}
    try:
        for line in open(machine_path):
            k, _, v = line.rstrip("\n").partition("\t")
            if k:
                machine[k] = v
    except OSError:
        pass
    report = {
        "report": "tabtune gpu-kit",
        "mode": mode,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "totalSeconds": float(machine.pop("elapsed", "0") or 0),
        "kit": read_json(manifest_path),
        "machine": machine,
        "statuses": {k: v.get("status") for k, v in sections.items()},
        "summary": summarise(sections),
        "sections": sections,
    }
    report["kit"].pop("files", None)
    with open(out_path, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(out_path)


if __name__ == "__main__":
    main()
