#!/usr/bin/env bash
# docker-compose.yml is valid and names every service binary that the build makes.
# (No Docker engine is needed: `docker-compose config` only parses and resolves.)
cd "$(dirname "$0")/../.."
command -v docker-compose >/dev/null || { echo "skip: docker-compose not installed"; exit 77; }
out=$(docker-compose config 2>&1) || { echo "$out"; echo "FAIL: docker-compose config"; exit 1; }
for svc in capture train eval; do
    echo "$out" | grep -q "saeflow-$svc" || { echo "FAIL: compose does not run saeflow-$svc"; exit 1; }
    [ -x "$SAEFLOW_BIN/saeflow-$svc" ] || { echo "FAIL: saeflow-$svc not built"; exit 1; }
done
n=$(echo "$out" | grep -c "healthz")
[ "$n" -ge 3 ] || { echo "FAIL: expected a /healthz check per service, found $n"; exit 1; }
echo "RESULT compose services=capture,train,eval healthchecks=$n"
