#!/usr/bin/env python3
# Simulates, step by step, the algorithm of topk_kernel in common/sae/sae_cuda.cu (radix
# select on order keys with 11/11/10-bit digits, the warp-parallel bin search, candidate
# compaction after the first digit, the index-order gather that applies the tie rule)
# and checks it against a plain sort by rank (value desc, index asc; NaN never selected).
# It checks the algorithm, not the CUDA code: the kernel itself is checked by
# test_gpu_topk on a device. Pure Python (no numpy): python3 tests/gpu/topk_sim.py
import random, struct, math
def okey(v):
    u = struct.unpack('<I', struct.pack('<f', v))[0]
    if u == 0x80000000: u = 0
    return (~u & 0xffffffff) if (u & 0x80000000) else (u | 0x80000000)
SH = [21, 10, 0]; NB = [2048, 2048, 1024]
def find_bin(hist, nb, rem):
    per = nb // 32
    cnt = [sum(hist[l*per:(l+1)*per]) for l in range(32)]
    suf = [sum(cnt[l:]) for l in range(32)]
    hits = [l for l in range(32) if suf[l] >= rem and suf[l] - cnt[l] < rem]
    assert len(hits) == 1
    l = hits[0]; cum = suf[l] - cnt[l]
    for q in range(l*per + per - 1, l*per - 1, -1):
        if cum + hist[q] >= rem: return q, cum
        cum += hist[q]
    assert False
def sim(vals, kk, mode, CAND=8192):
    n = len(vals)
    src = list(range(n))  # indices into vals (index order)
    prefix = msk = 0; rem = kk; allf = False; total = 0
    for p in range(3):
        sh, nb = SH[p], NB[p]
        hist = [0]*nb
        for i in src:
            v = vals[i]
            if math.isnan(v): continue
            k = okey(v)
            if k & msk == prefix: hist[(k >> sh) & (nb-1)] += 1
        if p == 0:
            total = sum(hist)
            if total <= kk: allf = True
        if allf: break
        b, above = find_bin(hist, nb, rem)
        prefix |= b << sh; msk |= (nb-1) << sh; rem -= above
        ncand = above + hist[b]
        if p == 0 and mode == 2 and ncand <= CAND:
            src = [i for i in range(n) if not math.isnan(vals[i]) and (okey(vals[i]) >> 21) >= b]
            assert len(src) == ncand
    T = prefix
    if allf:
        sel = [i for i in src if not math.isnan(vals[i])]
    else:
        gt = [i for i in src if not math.isnan(vals[i]) and okey(vals[i]) > T]
        eq = [i for i in src if not math.isnan(vals[i]) and okey(vals[i]) == T][:rem]
        assert len(gt) == kk - rem
        sel = gt + eq
    sel.sort(key=lambda i: (-vals[i], i))
    return sel
def oracle(vals, kk):
    e = [i for i in range(len(vals)) if not math.isnan(vals[i])]
    e.sort(key=lambda i: (-vals[i], i)); return e[:kk]
random.seed(3)
f32 = lambda x: struct.unpack('<f', struct.pack('<f', x))[0]
for trial in range(400):
    n = random.randint(1, 4000); kk = random.randint(1, 700)
    if trial % 3 == 0: v = [random.randint(0, 39) / 4.0 - 3 for _ in range(n)]
    elif trial % 3 == 1: v = [f32(random.gauss(0, 10 ** random.uniform(-3, 3))) for _ in range(n)]
    else: v = [f32(random.expovariate(1.0)) for _ in range(n)]
    if trial % 5 == 0:
        for i in range(0, n, 7): v[i] = float('nan')
    if trial % 4 == 0:
        for i in range(0, n, 5): v[i] = -0.0
    want = oracle(v, kk)
    for mode in (0, 2):
        assert sim(v, kk, mode, CAND=random.choice([64, 512, 8192])) == want, (trial, mode)
print("topk kernel algorithm (11/11/10 digits, compaction): 400 trials x 2 modes agree")
