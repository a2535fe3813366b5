"""Writes every PyTorch reference fixture: /usr/bin/python3 tests/reference/generate.py [family ...]

Runs each gen_<family>.py beside this file (or only the families named)."""
import glob
import importlib.util
import os
import sys
import time

import torch

import common

torch.set_num_threads(2)
HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv):
    wanted = set(argv)
    for path in sorted(glob.glob(os.path.join(HERE, "gen_*.py"))):
        family = os.path.basename(path)[4:-3]
        if wanted and family not in wanted:
            continue
        spec = importlib.util.spec_from_file_location(f"gen_{family}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        t0 = time.time()
        for name, fx in mod.main().items():
            out = common.write(name, fx)
            print(f"{family}: wrote {os.path.relpath(out, HERE)}")
        print(f"{family}: {time.time() - t0:.1f}s")


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main(sys.argv[1:])
