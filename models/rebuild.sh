#!/usr/bin/env bash
# Rebuild the packaged model sets from synthetic normal sound (demo/default models only:
# train your own on real recordings of your machines with `signalcraft train`).
# Each manifest records the exact `signalcraft train` command that produced it.
set -euo pipefail
cd "$(dirname "$0")/.."
SC=${SC:-.venv/bin/signalcraft}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
seed=100
for type in pump fan slider valve; do
  # The demo fleet's machines: two of each type, 20 normal clips each.
  for id in id_00 id_02; do
    "$SC" synth "$tmp/data" --machine-type "$type" --machine-id "$id" --normal 20 --abnormal 0 --seed "$seed" -q
    seed=$((seed + 1))
  done
  rm -rf "models/$type"
  "$SC" train "$tmp/data/$type" --out "models/$type" --machine-type "$type" --name "$type-synthetic" -q
done
rm -rf models/default
"$SC" train "$tmp/data" --out models/default --machine-type default --name default-synthetic -q
du -sh models
