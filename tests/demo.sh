#!/usr/bin/env bash
# `make demo`: trains a Top-K SAE on stories260K's residual stream over the TinyStories
# sample with the whole pipeline (saeflow-capture -> ZeroMQ -> saeflow-train) started by
# `saeflow up`, with live progress. Ctrl-C stops it with a resumable checkpoint; run
# `make demo` again to resume. Results land in build/demo/ (checkpoints, SAELens export).
set -u
cd "$(dirname "$0")/.."
MODELS=${SAEFLOW_MODELS:-$(pwd)/../shared/models}
CORPUS=${SAEFLOW_CORPUS:-$(pwd)/../shared/corpus}
BUILD=${BUILD:-build}
if [ ! -f "$MODELS/stories260K/stories260K.bin" ] || [ ! -f "$CORPUS/tinystories-sample.jsonl" ]; then
    echo "demo: stories260K or the TinyStories sample is missing"
    echo "      (looked in $MODELS and $CORPUS; run 'make models' or set SAEFLOW_MODELS / SAEFLOW_CORPUS)"
    exit 1
fi
RUN_DIR=$(pwd)/$BUILD/demo
mkdir -p "$RUN_DIR"
sed -e "s|@MODELS@|$MODELS|g" -e "s|@CORPUS@|$CORPUS|g" -e "s|@RUN_DIR@|$RUN_DIR|g" \
    deploy/demo.conf >"$RUN_DIR/demo.conf"
echo "demo: saeflow up $RUN_DIR/demo.conf  (metrics: http://127.0.0.1:9464/metrics)"
exec "$BUILD/bin/saeflow" up "$RUN_DIR/demo.conf"
