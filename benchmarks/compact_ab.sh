#!/usr/bin/env bash
# A/B of compact-encoder settings (docs/RESULTS.md, "Compact encoder"): writes the untrained ImageNet
# encoder with the given settings, then scores it on davis2016-val-dev and multiobject-dev at 240x427.
#   benchmarks/compact_ab.sh NAME [python -m mast.training.pretrained options, e.g. --taps 4 7 --temperature 0.05]
# or, for an existing checkpoint:  CKPT=path/to.pt benchmarks/compact_ab.sh NAME
# Results: runs/ab/NAME/{dev,mo}/ (masks and CSVs) and runs/ab/NAME.txt (the two J&F lines).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
shared=${MAST_SHARED:-../shared}
mkdir -p runs/ab
ckpt=${CKPT:-runs/ab/$name.pt}
[ -n "${CKPT:-}" ] || python -m mast.training.pretrained "$ckpt" "$@"
for split in dev mo; do
  root=$shared/data/davis2016-val-dev; [ $split = mo ] && root=$shared/data/multiobject-dev
  mast-eval --davis "$root" --checkpoint "$ckpt" --size 240x427 --out runs/ab/$name/$split --csv-dir runs/ab/$name/$split \
    > runs/ab/$name.$split.log 2>&1
  echo "$name $split J&F,J,F: $(sed -n 2p runs/ab/$name/$split/global_results.csv | cut -d, -f1,2,5)"
done | tee runs/ab/$name.txt
