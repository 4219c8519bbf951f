#!/usr/bin/env bash
# Rebuild the default model package models/moe-mini/ from nothing: corpus, tokenizer, training, export.
#
#   models/default/make.sh [WORK_DIR]        (WORK_DIR default /tmp/moe-mini-run; holds everything
#                                            but the package: corpus, tokenizer, raw checkpoint, logs)
#
# Needs apt-get + dpkg-deb (Debian), python3 with torch, transformers, tokenizers, and the exporter's
# dependencies (onnx, numpy, safetensors, tqdm). Training runs on the CPU with one torch thread
# (about 50-60 minutes on a shared 2-core machine); THREADS=2 uses two.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODELS="$(dirname "$HERE")"
WORK="${1:-/tmp/moe-mini-run}"
NAME=moe-mini
THREADS="${THREADS:-1}"
QUANT="${QUANT:-int8}"
mkdir -p "$WORK"

echo "== corpus (Debian r-cran-janeaustenr)"
python3 "$HERE/corpus.py" "$WORK"

echo "== tokenizer"
python3 "$HERE/tokenizer.py" "$WORK/corpus.txt" "$WORK/tokenizer" --vocab 4096

echo "== training (log: $WORK/train/train.log.jsonl)"
rm -rf "$WORK/train"
python3 "$HERE/train.py" --corpus "$WORK/corpus.txt" --tokenizer "$WORK/tokenizer" --out "$WORK/train" \
    --threads "$THREADS"

echo "== samples"
python3 "$HERE/sample.py" "$WORK/train/checkpoint"

echo "== export to $MODELS/$NAME ($QUANT)"
PYTHONPATH="$MODELS/export${PYTHONPATH:+:$PYTHONPATH}" python3 -m moe_export "$WORK/train/checkpoint" \
    "$MODELS/$NAME" --quant "$QUANT" --name "$NAME" --force
du -sh "$MODELS/$NAME"

echo "== check the package against the checkpoint"
python3 "$HERE/check_package.py" "$WORK/train/checkpoint" "$MODELS/$NAME"
