#!/usr/bin/env bash
# Lint: banned C functions (STYLE.md) and clang-format conformance of C sources.
# Generated code under build*/ is not ours and is not checked.
set -u
cd "$(dirname "$0")/.."
fail=0
files=$(git ls-files '*.c' '*.h' '*.cu')
banned='\b(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|gets|alloca)[[:space:]]*\('
if hits=$(grep -nE "$banned" $files | grep -vE '^\S+:[0-9]+:\s*(//|/?\*)'); then
    echo "lint: banned functions (use snprintf, memcpy with lengths, strtok_r, parse_i64):"
    echo "$hits" | sed 's/^/  /'
    fail=1
fi
if command -v clang-format >/dev/null; then
    bad=()
    for f in $files; do
        clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
    done
    if [ ${#bad[@]} -gt 0 ]; then
        echo "lint: not clang-formatted (run 'make format'):"
        printf '  %s\n' "${bad[@]}"
        fail=1
    fi
else
    echo "lint: clang-format not installed; format check skipped"
fi
[ $fail -eq 0 ] && echo "lint: ok"
exit $fail
