#!/usr/bin/env bash
# Train, sample and copy the record of cpu-scale runs into results/<section>/<preset>/.
#   scripts/record_runs.sh SCRATCH section/preset [section/preset ...]
# Runs (run directories, prepared demo corpora) live under SCRATCH; the record of each run goes to
# SCRATCH/results/<section>/<preset>/ (results.json: the one-schema row with config, data hash,
# steps, device, git SHA; config.json, metrics.jsonl, the samples), to be copied into results/.
# Run it from a clean checkout: the git SHA is part of the record. TWIN_PROTOCOL=blocked:128 also
# evaluates *_transformer presets under that protocol (their Perceiver AR twin's), into evals/, and
# scores their best kept checkpoint (by eval loss) under it and under their own protocol
# (`repro eval --checkpoint best`: evals/<split>_<protocol>_step<N>.json).
set -euo pipefail
cd "$(dirname "$0")/.."
# This checkout's code, also when .venv is another checkout's editable install (a venv shared
# between clones): the recorded git SHA is then this checkout's, as is the code that ran.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
scratch=$1; shift
export REPRO_DATA_DIR="$scratch/data" JAX_PLATFORMS=cpu
BIN=${BIN:-.venv/bin}
for item in "$@"; do
  section=${item%%/*}; preset=${item#*/}
  wd="$scratch/runs/$section/$preset"
  echo "== $section/$preset ($(date -u +%H:%M:%S))"
  start=$(date +%s)
  "$BIN/repro" run "$section" --preset "$preset" --workdir "$wd" --no-progress
  if [[ "$preset" != *transformer* ]]; then
    "$BIN/repro" sample "$section" --workdir "$wd" --num 8 || echo "sampling $section/$preset failed"
  elif [ -n "${TWIN_PROTOCOL:-}" ]; then
    # The Transformer baseline also under its Perceiver AR twin's protocol (same context per target).
    "$BIN/repro" eval "$section" --workdir "$wd" --protocol "$TWIN_PROTOCOL" --no-progress
    "$BIN/repro" eval "$section" --workdir "$wd" --checkpoint best --protocol "$TWIN_PROTOCOL" --no-progress
    "$BIN/repro" eval "$section" --workdir "$wd" --checkpoint best --no-progress
  fi
  end=$(date +%s)
  dest="$scratch/results/$section/$preset"
  rm -rf "$dest"; mkdir -p "$dest"
  cp "$wd/results.json" "$wd/config.json" "$wd/metrics.jsonl" "$dest/"
  [ -d "$wd/samples" ] && cp -r "$wd/samples" "$dest/samples"
  [ -d "$wd/evals" ] && cp -r "$wd/evals" "$dest/evals"
  printf '{"command": "repro run %s --preset %s", "wall_seconds_command": %d}\n' "$section" "$preset" $((end - start)) > "$dest/command.json"
done
