#!/usr/bin/env python3
"""Independent check of saeflow's SAE exports (does not use saeflow's C code).

Reads each case directory written by test_sae_export_check:
  case.json             what the C side exported (layout, arch, sizes, metadata)
  sae/                  the exported directory (SAELens v6) or sparsify root
  inputs.f32            [B, d_in] raw float32 activations
  expected_z.f32        [B, d_sae] saeflow's encoder output on them (original SAE)
  expected_xhat.f32     [B, d_in] saeflow's reconstruction
  sparsity.f32          [d_sae] what was written as log10 density (when present)

Parses safetensors with json + struct + numpy only, asserts the exact file names,
tensor names, shapes, dtypes and cfg.json keys that SAELens v6 (or sparsify) expect,
recomputes the forward pass the way those libraries do, and compares with saeflow's
outputs. Exit status 0 = all cases pass.

Key sets (from the libraries' sources):
  SAELens sae_lens/saes/sae.py SAEConfig: d_in, d_sae, dtype, device,
    apply_b_dec_to_input, normalize_activations, reshape_activations, metadata;
    to_dict() adds architecture. topk_sae.py TopKSAEConfig: k,
    rescale_acts_by_decoder_norm. jumprelu_sae.py: no extra keys, tensor threshold.
  SAELens 6.0 SAEMetadata (a dataclass there, so unknown keys would not load):
    model_name, hook_name, model_class_name, hook_layer, hook_head_index,
    model_from_pretrained_kwargs, prepend_bos, exclude_special_tokens,
    neuronpedia_id, context_size, seqpos_slice, dataset_path, sae_lens_version,
    sae_lens_training_version.
  sparsify sparsify/config.py SparseCoderConfig + d_in (sparse_coder.py save_to_disk).
"""
import json
import re
import struct
import sys

import numpy as np

SAELENS_FILES = {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors"}
SAELENS_COMMON_KEYS = {
    "architecture", "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input",
    "normalize_activations", "reshape_activations", "metadata",
}
SAELENS_ARCH_KEYS = {
    "topk": {"k", "rescale_acts_by_decoder_norm"},
    "jumprelu": set(),
    "standard": set(),
}
SAELENS_TENSORS = {
    "topk": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "standard": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
}
SAEMETADATA_60_FIELDS = {
    "model_name", "hook_name", "model_class_name", "hook_layer", "hook_head_index",
    "model_from_pretrained_kwargs", "prepend_bos", "exclude_special_tokens",
    "neuronpedia_id", "context_size", "seqpos_slice", "dataset_path",
    "sae_lens_version", "sae_lens_training_version",
}
# what saeflow writes: all of these, nothing else
SAEFLOW_METADATA_KEYS = SAEMETADATA_60_FIELDS - {"seqpos_slice"}
SPARSIFY_CFG_KEYS = {
    "activation", "expansion_factor", "normalize_decoder", "num_latents", "k",
    "multi_topk", "skip_connection", "transcode", "d_in",
}
SPARSIFY_TENSORS = {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}
HOOK_RE = re.compile(r"^blocks\.\d+\.hook_(resid_pre|resid_mid|resid_post|attn_out|mlp_out)$")

DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "F64": (np.float64, 8)}


class CheckError(Exception):
    pass


def require(cond, msg):
    if not cond:
        raise CheckError(msg)


def read_safetensors(path):
    """Returns ({name: np.ndarray}, metadata) after validating the whole layout."""
    with open(path, "rb") as f:
        raw = f.read()
    require(len(raw) >= 8, f"{path}: shorter than 8 bytes")
    (n,) = struct.unpack("<Q", raw[:8])
    require(8 + n <= len(raw), f"{path}: header length {n} past the end")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    require(isinstance(header, dict), f"{path}: header is not an object")
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    require(isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in meta.items()),
            f"{path}: __metadata__ must map strings to strings")
    spans, tensors = [], {}
    for name, e in header.items():
        require(set(e) == {"dtype", "shape", "data_offsets"}, f"{path}:{name}: keys {sorted(e)}")
        require(e["dtype"] in DTYPES, f"{path}:{name}: dtype {e['dtype']}")
        dt, size = DTYPES[e["dtype"]]
        shape = e["shape"]
        require(all(isinstance(s, int) and s >= 0 for s in shape), f"{path}:{name}: shape")
        b, end = e["data_offsets"]
        numel = int(np.prod(shape)) if shape else 1
        require(0 <= b <= end <= len(data), f"{path}:{name}: offsets out of range")
        require(end - b == numel * size, f"{path}:{name}: {end - b} bytes for {shape}")
        require(b % size == 0, f"{path}:{name}: data not aligned to its dtype")
        spans.append((b, end, name))
        tensors[name] = (e["dtype"], np.frombuffer(data[b:end], dtype=np.dtype(dt).newbyteorder("<"))
                         .reshape(shape))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        require(e0 <= b1, f"{path}: tensors {n0} and {n1} overlap")
    require(not spans or spans[-1][1] == len(data), f"{path}: trailing bytes after the data")
    return tensors, meta


def version_tuple(v):
    parts = re.match(r"^(\d+)\.(\d+)\.(\d+)", v)
    require(parts is not None, f"version {v!r} is not x.y.z")
    return tuple(int(p) for p in parts.groups())


def read_f32(path, shape):
    a = np.fromfile(path, dtype="<f4")
    require(a.size == int(np.prod(shape)), f"{path}: {a.size} floats, want {shape}")
    return a.reshape(shape).astype(np.float64)


def topk_rows(h, k):
    """SAELens / sparsify TopK: keep the k largest per row, ReLU on them."""
    z = np.zeros_like(h)
    idx = np.argpartition(-h, k - 1, axis=1)[:, :k]
    rows = np.arange(h.shape[0])[:, None]
    z[rows, idx] = np.maximum(h[rows, idx], 0.0)
    return z


def compare(name, got, want, h=None, k=None, atol=1e-5, rtol=1e-5):
    bad = np.abs(got - want) > atol + rtol * np.abs(want)
    if bad.any() and h is not None and k is not None:
        # a row may differ only where the k-th and (k+1)-th pre-activations tie
        for r in np.unique(np.nonzero(bad)[0]):
            s = np.sort(h[r])[::-1]
            require(k < s.size and abs(s[k - 1] - s[k]) < 1e-5,
                    f"{name}: row {r} differs and is not a near-tie")
            bad[r] = False
    require(not bad.any(), f"{name}: {int(bad.sum())} values differ; max |diff| "
            f"{float(np.max(np.abs(got - want))):.3g}")
    return float(np.max(np.abs(got - want))) if got.size else 0.0


def check_saelens(case, d):
    sae = d + "/sae"
    import os
    files = set(os.listdir(sae))
    want_files = {"cfg.json", "sae_weights.safetensors"} | (
        {"sparsity.safetensors"} if case["has_sparsity"] else set())
    require(files == want_files, f"files {sorted(files)}, want {sorted(want_files)}")
    with open(sae + "/cfg.json") as f:
        cfg = json.load(f)
    arch = cfg.get("architecture")
    require(arch in SAELENS_ARCH_KEYS, f"architecture {arch!r}")
    require(arch == case["arch"], f"architecture {arch}, want {case['arch']}")
    want_keys = SAELENS_COMMON_KEYS | SAELENS_ARCH_KEYS[arch]
    require(set(cfg) == want_keys, f"cfg keys {sorted(cfg)}, want {sorted(want_keys)}")
    for key in ("d_in", "d_sae") + (("k",) if arch == "topk" else ()):
        require(type(cfg[key]) is int and cfg[key] > 0, f"{key} must be a positive int")
    require(cfg["d_in"] == case["d_in"] and cfg["d_sae"] == case["d_sae"], "d_in / d_sae")
    if arch == "topk":
        require(cfg["k"] == case["k"], f"k {cfg['k']}")
        require(cfg["rescale_acts_by_decoder_norm"] is False, "rescale_acts_by_decoder_norm")
    require(cfg["dtype"] == "float32" and cfg["device"] == "cpu", "dtype / device")
    require(cfg["apply_b_dec_to_input"] is True, "apply_b_dec_to_input")
    require(cfg["normalize_activations"] == "none", "normalize_activations must be none")
    require(cfg["reshape_activations"] == "none", "reshape_activations")
    meta = cfg["metadata"]
    require(isinstance(meta, dict), "metadata is not an object")
    require(set(meta) <= SAEMETADATA_60_FIELDS,
            f"metadata keys outside SAELens 6.0's SAEMetadata: {sorted(set(meta) - SAEMETADATA_60_FIELDS)}")
    require(set(meta) == SAEFLOW_METADATA_KEYS, f"metadata keys {sorted(meta)}")
    require(version_tuple(meta["sae_lens_version"]) >= (6, 0, 0), "sae_lens_version < 6")
    require(HOOK_RE.match(meta["hook_name"] or ""), f"hook_name {meta['hook_name']!r}")
    for key in ("model_name", "hook_name", "hook_layer", "context_size", "prepend_bos",
                "dataset_path"):
        require(meta[key] == case["meta"][key], f"metadata.{key} {meta[key]!r}")
    require(meta["hook_head_index"] is None, "hook_head_index")
    require(meta["model_from_pretrained_kwargs"] == {}, "model_from_pretrained_kwargs")
    require(isinstance(meta["prepend_bos"], bool), "prepend_bos is not a bool")

    t, st_meta = read_safetensors(sae + "/sae_weights.safetensors")
    require(set(t) == SAELENS_TENSORS[arch], f"tensors {sorted(t)}")
    n, di = cfg["d_sae"], cfg["d_in"]
    shapes = {"W_enc": (di, n), "b_enc": (n,), "W_dec": (n, di), "b_dec": (di,), "threshold": (n,)}
    for name, (dtype, arr) in t.items():
        require(dtype == "F32", f"{name} dtype {dtype}")
        require(arr.shape == shapes[name], f"{name} shape {arr.shape}, want {shapes[name]}")
        require(np.all(np.isfinite(arr)), f"{name} has non-finite values")
    W_enc, b_enc = t["W_enc"][1].astype(np.float64), t["b_enc"][1].astype(np.float64)
    W_dec, b_dec = t["W_dec"][1].astype(np.float64), t["b_dec"][1].astype(np.float64)

    B = case["B"]
    x = read_f32(d + "/inputs.f32", (B, di))
    want_z = read_f32(d + "/expected_z.f32", (B, n))
    want_xhat = read_f32(d + "/expected_xhat.f32", (B, di))
    # SAELens encode: process_sae_in (x - b_dec), x @ W_enc + b_enc, activation
    h = (x - b_dec) @ W_enc + b_enc
    if arch == "topk":
        z = topk_rows(h, cfg["k"])
    elif arch == "jumprelu":
        thr = t["threshold"][1].astype(np.float64)
        z = np.maximum(h, 0.0) * (h > thr)
    else:
        z = np.maximum(h, 0.0)
    dz = compare("z", z, want_z, h, cfg["k"] if arch == "topk" else None)
    # SAELens decode: z @ W_dec + b_dec
    xhat = want_z @ W_dec + b_dec
    dx = compare("x_hat", xhat, want_xhat, atol=1e-4, rtol=1e-4)
    active = int((want_z != 0).sum())
    require(active > 0, "no latent fired: the case tests nothing")

    if case["has_sparsity"]:
        s, _ = read_safetensors(sae + "/sparsity.safetensors")
        require(set(s) == {"sparsity"}, f"sparsity tensors {sorted(s)}")
        dtype, arr = s["sparsity"]
        require(dtype == "F32" and arr.shape == (n,), f"sparsity {dtype} {arr.shape}")
        want = read_f32(d + "/sparsity.f32", (n,))
        require(np.array_equal(arr.astype(np.float64), want), "sparsity values differ")
    return f"arch={arch} max|dz|={dz:.2e} max|dx_hat|={dx:.2e} active={active}"


def check_sparsify(case, d):
    import os
    hook = case["meta"]["hook_name"]
    root = d + "/sae"
    require(os.listdir(root) == [hook], f"hookpoints {os.listdir(root)}, want [{hook}]")
    hd = f"{root}/{hook}"
    require(set(os.listdir(hd)) == {"cfg.json", "sae.safetensors"}, f"files {os.listdir(hd)}")
    with open(hd + "/cfg.json") as f:
        cfg = json.load(f)
    require(set(cfg) == SPARSIFY_CFG_KEYS, f"cfg keys {sorted(cfg)}")
    require(cfg["activation"] == "topk", "activation")
    di, k = cfg["d_in"], cfg["k"]
    n = cfg["num_latents"] or di * cfg["expansion_factor"]
    require(n == case["d_sae"] and di == case["d_in"] and k == case["k"], "sizes")
    require(cfg["skip_connection"] is False and cfg["transcode"] is False, "skip / transcode")
    t, _ = read_safetensors(hd + "/sae.safetensors")
    require(set(t) == SPARSIFY_TENSORS, f"tensors {sorted(t)}")
    shapes = {"encoder.weight": (n, di), "encoder.bias": (n,), "W_dec": (n, di), "b_dec": (di,)}
    for name, (dtype, arr) in t.items():
        require(dtype == "F32" and arr.shape == shapes[name], f"{name} {dtype} {arr.shape}")
    W, b = t["encoder.weight"][1].astype(np.float64), t["encoder.bias"][1].astype(np.float64)
    W_dec, b_dec = t["W_dec"][1].astype(np.float64), t["b_dec"][1].astype(np.float64)
    B = case["B"]
    x = read_f32(d + "/inputs.f32", (B, di))
    want_z = read_f32(d + "/expected_z.f32", (B, n))
    want_xhat = read_f32(d + "/expected_xhat.f32", (B, di))
    # sparsify encode: relu(linear(x - b_dec)) then top-k
    h = (x - b_dec) @ W.T + b
    z = topk_rows(np.maximum(h, 0.0), k)
    dz = compare("z", z, want_z, h, k)
    dx = compare("x_hat", want_z @ W_dec + b_dec, want_xhat, atol=1e-4, rtol=1e-4)
    return f"sparsify max|dz|={dz:.2e} max|dx_hat|={dx:.2e}"


def main(argv):
    if len(argv) < 2:
        print("usage: check_saelens.py CASE_DIR...", file=sys.stderr)
        return 2
    failed = 0
    for d in argv[1:]:
        with open(d + "/case.json") as f:
            case = json.load(f)
        try:
            check = check_sparsify if case["layout"] == "sparsify" else check_saelens
            print(f"ok   {case['name']}: {check(case, d)}")
        except (CheckError, KeyError, ValueError, OSError) as e:
            failed += 1
            print(f"FAIL {case['name']}: {type(e).__name__}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
