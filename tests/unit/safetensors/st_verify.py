#!/usr/bin/env python3
"""Independent check of a .safetensors file written by test_safetensors.c.

Uses only the standard library (json, struct), so it shares no code with saeflow.
Checks the layout rules of the format and our writer (header length, 8-byte padding
with spaces, offsets contiguous from 0 to the end of the file, every tensor aligned to
its element size, shape * dtype size == bytes), then recomputes every tensor named
t_<DTYPE> from the formula the C test used, including its own round-to-nearest-even
float32 -> float16 (struct 'e') and float32 -> bfloat16 conversions, and checks the
metadata. Exit 0 when everything matches, 1 otherwise.

usage: st_verify.py FILE N_ELEMENTS
"""
import json
import struct
import sys

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
         "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
FMT = {"BOOL": "?", "U8": "B", "I8": "b", "I16": "h", "U16": "H", "F16": "e",
       "I32": "i", "U32": "I", "F32": "f", "I64": "q", "U64": "Q", "F64": "d"}
META = {"format": "pt", "saeflow.test": 'round trip "quoted" \\ \u00fcn\u00efcode\n\ttab'}


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bf16_bits(x):
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    if (u & 0x7F800000) == 0x7F800000 and (u & 0x7FFFFF):
        return (u >> 16) | 0x40
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def g(i):
    return (i * 7919 % 10007) - 5003


def expected(dtype, i):
    if dtype == "F64":
        return g(i) / 1237.0
    if dtype in ("F32", "F16"):
        return f32(g(i) / 1237.0)
    if dtype == "BF16":
        return bf16_bits(f32(g(i) / 1237.0))
    return {"I64": lambda: g(i) * 4294967311, "I32": lambda: g(i) * 1000,
            "I16": lambda: g(i), "I8": lambda: (i * 31 % 256) - 128,
            "U8": lambda: i * 31 % 256, "BOOL": lambda: i % 3 == 0,
            "U16": lambda: i * 7919 % 65536, "U32": lambda: i * 2654435761 % 2**32,
            "U64": lambda: i * 11400714819323198485 % 2**64}[dtype]()


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    data = open(path, "rb").read()
    errors = []
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen % 8 or 8 + hlen > len(data):
        errors.append("header length %d not a multiple of 8 or too long" % hlen)
    text = data[8:8 + hlen].decode("utf-8")
    if text[text.rindex("}") + 1:].strip(" "):
        errors.append("header padding is not spaces")
    header = json.loads(text)
    body = data[8 + hlen:]
    if header.get("__metadata__") != META:
        errors.append("metadata %r != %r" % (header.get("__metadata__"), META))
    tensors = sorted((v["data_offsets"][0], v["data_offsets"][1], k, v)
                     for k, v in header.items() if k != "__metadata__")
    pos = 0
    for b, e, name, v in tensors:
        size = SIZES[v["dtype"]]
        numel = 1
        for d in v["shape"]:
            numel *= d
        if b != pos:
            errors.append("%s starts at %d, expected %d" % (name, b, pos))
        if (8 + hlen + b) % size:
            errors.append("%s is not aligned" % name)
        if e - b != numel * size:
            errors.append("%s has %d bytes, expected %d" % (name, e - b, numel * size))
        pos = e
        if not name.startswith("t_"):
            continue
        dtype = name[2:]
        if dtype != v["dtype"] or v["shape"] != [3, n // 3]:
            errors.append("%s: dtype %s shape %s" % (name, v["dtype"], v["shape"]))
            continue
        raw = body[b:e]
        if dtype == "BF16":
            got = struct.unpack("<%dH" % numel, raw)
        else:
            got = struct.unpack("<%d%s" % (numel, FMT[dtype]), raw)
        for i in range(numel):
            want = expected(dtype, i)
            if dtype == "F16":
                want = struct.unpack("<e", struct.pack("<e", want))[0]
            if got[i] != want:
                errors.append("%s[%d] = %r, expected %r" % (name, i, got[i], want))
                break
    if pos != len(body):
        errors.append("data section has %d bytes, tensors cover %d" % (len(body), pos))
    for e in errors:
        print("st_verify:", e)
    if not errors:
        print("st_verify: ok, %d tensors" % len(tensors))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
