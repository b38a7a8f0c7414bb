#!/usr/bin/env bash
# Rebuild the packaged model sets (see models/README.md).
#   models/rebuild.sh         the real-data sets models/{valve,fan,pump,slider,default}: each trained on its
#                             type's train normals of the fixed split bench/split.json (../shared/data), and
#                             the machine set models/valve/section_00 on that machine's train normals alone
#   models/rebuild.sh demo    the synthetic demo sets signalcraft_core/local/demo_models/{pump,fan,slider,valve,default}
# Each manifest records the exact `signalcraft train` command that produced it.
set -euo pipefail
cd "$(dirname "$0")/.."
SC=${SC:-.venv/bin/signalcraft}
PY=${PY:-.venv/bin/python}
if [ "${1:-real}" = demo ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  seed=100
  demo=signalcraft_core/local/demo_models
  for type in pump fan slider valve; do
    # The demo fleet's machines: two of each type, 20 normal clips each.
    for id in id_00 id_02; do
      "$SC" synth "$tmp/data" --machine-type "$type" --machine-id "$id" --normal 20 --abnormal 0 --seed "$seed" -q
      seed=$((seed + 1))
    done
    rm -rf "$demo/$type"
    "$SC" train "$tmp/data/$type" --out "$demo/$type" --machine-type "$type" --name "$type-synthetic" -q
  done
  rm -rf "$demo/default"
  "$SC" train "$tmp/data" --out "$demo/default" --machine-type default --name default-synthetic -q
  du -sh "$demo"
  exit 0
fi
[ -d ../shared/data ] || { echo "../shared/data is absent: the real-data sets need it" >&2; exit 1; }
"$PY" bench/split.py --check
# Type sets first: rebuilding models/valve removes the machine sets below it.
for name in valve fan pump slider default valve/section_00; do
  mapfile -t clips < <("$PY" bench/split.py --train "$name")
  rm -rf "models/$name"
  "$SC" train "${clips[@]}" --out "models/$name" --machine-type "${name%%/*}" --name "${name//\//-}-real" -q
done
du -sh models
