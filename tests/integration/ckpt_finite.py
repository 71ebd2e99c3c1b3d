#!/usr/bin/env python3
"""Checks that every F32 tensor of every sae-*.safetensors under the checkpoint
directories given is finite (no NaN, no inf). Prints one RESULT line; exit 1 if not,
or if no checkpoint was found. Used by inject.sh and diverge.sh."""
import array
import glob
import json
import math
import struct
import sys

files = []
for d in sys.argv[1:]:
    files += sorted(glob.glob(f"{d}/ckpt-*/sae-*.safetensors"))
if not files:
    print("ckpt_finite: no checkpoint found")
    sys.exit(1)
bad = 0
values = 0
for path in files:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        body = f.read()
    for name, t in head.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        b, e = t["data_offsets"]
        a = array.array("f")
        a.frombytes(body[b:e])
        values += len(a)
        nb = sum(1 for v in a if not math.isfinite(v))
        if nb:
            print(f"ckpt_finite: {path} {name}: {nb} non-finite values")
            bad += nb
print(f"RESULT ckpt_finite files={len(files)} values={values} non_finite={bad}")
sys.exit(1 if bad else 0)
