#!/usr/bin/env bash
# docker-compose.yml is valid and names every service binary that the build makes, each
# with a /healthz check, and every flag in it is one the binary accepts
# (saeflow-X FLAGS --print-config parses them without opening anything).
# The YAML is read with Debian's python3-yaml (what `make deps` installs); `docker
# compose config` also runs when a compose tool happens to be present. Neither needs a
# Docker engine. Without python3-yaml the test skips with a message.
cd "$(dirname "$0")/../.."
BIN=${SAEFLOW_BIN:-build/bin}
python3 -c 'import yaml' 2>/dev/null || { echo "skip: python3-yaml not installed (apt-get install python3-yaml)"; exit 77; }
for svc in capture train eval; do
    [ -x "$BIN/saeflow-$svc" ] || { echo "FAIL: saeflow-$svc not built"; exit 1; }
done
python3 - "$BIN" <<'PY' || exit 1
import subprocess, sys, yaml
bin_dir = sys.argv[1]
doc = yaml.safe_load(open("docker-compose.yml"))
services = doc.get("services") or {}
checks = 0
for want in ("capture", "train", "eval"):
    svc = services.get(want)
    if not svc:
        sys.exit(f"FAIL: compose has no '{want}' service")
    cmd = svc.get("command")
    if not isinstance(cmd, list) or not cmd or cmd[0] != f"saeflow-{want}":
        sys.exit(f"FAIL: compose service {want} does not run saeflow-{want}: {cmd!r}")
    hc = svc.get("healthcheck", {}).get("test", [])
    if "healthz" not in " ".join(map(str, hc)):
        sys.exit(f"FAIL: compose service {want} has no /healthz check")
    checks += 1
    r = subprocess.run([f"{bin_dir}/saeflow-{want}", *map(str, cmd[1:]), "--print-config"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: saeflow-{want} refuses the compose flags: {r.stderr.strip()}")
print(f"RESULT compose services=capture,train,eval healthchecks={checks} flags accepted")
PY
if command -v docker-compose >/dev/null; then
    docker-compose config >/dev/null 2>&1 || { docker-compose config; echo "FAIL: docker-compose config"; exit 1; }
    echo "RESULT docker-compose config ok"
fi
exit 0
