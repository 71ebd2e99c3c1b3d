#!/usr/bin/env bash
# `saeflow sae info` on SAE directories exported by saeflow's own C exporter (via the
# test_sae_export_check binary): SAELens topk with sparsity, jumprelu, a sparsify root,
# an export folder with a SAELens directory per hook (what `saeflow up` writes),
# and the error paths (missing directory, corrupt cfg.json, usage) with their exit codes.
set -u
BIN=${SAEFLOW_BIN:-build/bin}
BUILD=${SAEFLOW_BUILD:-build}
exporter=$BUILD/tests/test_sae_export_check
if [ ! -x "$BIN/saeflow" ] || [ ! -x "$exporter" ]; then
    echo "saeflow or $exporter not built"; exit 77
fi
tmp=$(mktemp -d /tmp/sae_info.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# exports first; the numpy check inside may skip (77), the files are there either way
SAE_EXPORT_DIR=$tmp/exports "$exporter" >"$tmp/export.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then cat "$tmp/export.log"; echo "exporter failed rc=$rc"; exit 1; fi

fail=0
expect() { # expect <file> <regex>
    grep -Eq "$2" "$1" || { echo "FAIL: '$2' not in output:"; sed 's/^/    /' "$1"; fail=1; }
}

"$BIN/saeflow" sae info "$tmp/exports/topk/sae" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] || { echo "FAIL: topk info rc=$rc"; cat "$tmp/err"; fail=1; }
expect "$tmp/out" '^layout +saelens$'
expect "$tmp/out" '^architecture +topk'
expect "$tmp/out" '^d_in +32$'
expect "$tmp/out" '^d_sae +96 '
expect "$tmp/out" '^k +8$'
expect "$tmp/out" '^dtype +float32 \(weights F32\)$'
expect "$tmp/out" '^hook +blocks\.2\.hook_resid_post \(layer 2\)$'
expect "$tmp/out" '^model +stories15M$'
expect "$tmp/out" '^decoder row norms +min '
expect "$tmp/out" '^dead latents +0 '
# test_sae_export_check writes log10 densities -(i % 11) * 0.7: 27 of 96 above -2, 18 above -1
expect "$tmp/out" '^dense latents > 1% +27 '
expect "$tmp/out" '^dense latents > 10% +18 '

"$BIN/saeflow" sae info "$tmp/exports/jumprelu/sae" >"$tmp/out" 2>&1 || { echo "FAIL: jumprelu rc"; fail=1; }
expect "$tmp/out" '^architecture +jumprelu'
expect "$tmp/out" '^threshold +min '
"$BIN/saeflow" sae info "$tmp/exports/batchtopk_folded/sae" >"$tmp/out" 2>&1 || { echo "FAIL: batchtopk rc"; fail=1; }
expect "$tmp/out" '^architecture +jumprelu'
expect "$tmp/out" '^sparsity +none'

"$BIN/saeflow" sae info "$tmp/exports/sparsify_folded/sae" >"$tmp/out" 2>&1 || { echo "FAIL: sparsify rc"; fail=1; }
expect "$tmp/out" '^layout +sparsify$'
expect "$tmp/out" '^hook +blocks\.2\.hook_resid_post'

"$BIN/saeflow" sae info "$tmp/nope" >"$tmp/out" 2>&1; rc=$?
[ $rc -eq 1 ] || { echo "FAIL: missing dir rc=$rc (want 1)"; fail=1; }
expect "$tmp/out" 'no such directory'

cp -r "$tmp/exports/standard/sae" "$tmp/broken"
printf '{"architecture": "standard", "d_in": 32}' >"$tmp/broken/cfg.json"
"$BIN/saeflow" sae info "$tmp/broken" >"$tmp/out" 2>&1; rc=$?
[ $rc -eq 1 ] || { echo "FAIL: broken cfg rc=$rc (want 1)"; fail=1; }
expect "$tmp/out" 'cfg.json has no d_sae'

# an export folder as saeflow-train --export_dir / `saeflow up` write it: one SAELens
# directory per hook below the folder given
mkdir -p "$tmp/up_export"
cp -r "$tmp/exports/topk/sae" "$tmp/up_export/blocks.2.hook_resid_post"
mkdir -p "$tmp/up_export/.staging.tmp-1"
"$BIN/saeflow" sae info "$tmp/up_export" >"$tmp/out" 2>&1; rc=$?
[ $rc -eq 0 ] || { echo "FAIL: export folder rc=$rc"; cat "$tmp/out"; fail=1; }
expect "$tmp/out" '^layout +saelens$'
expect "$tmp/out" '^hook +blocks\.2\.hook_resid_post \(layer 2\)$'
cp -r "$tmp/exports/jumprelu/sae" "$tmp/up_export/blocks.3.hook_resid_post"
"$BIN/saeflow" sae info "$tmp/up_export" >"$tmp/out" 2>&1; rc=$?
[ $rc -eq 1 ] || { echo "FAIL: two hook directories rc=$rc (want 1)"; fail=1; }
expect "$tmp/out" '2 hookpoint directories'

"$BIN/saeflow" sae info >"$tmp/out" 2>&1; rc=$?
[ $rc -eq 2 ] || { echo "FAIL: usage rc=$rc (want 2)"; fail=1; }

[ $fail -eq 0 ] && echo "RESULT sae_info: saelens topk/jumprelu/batchtopk, sparsify, an export folder and 4 error paths ok"
exit $fail
