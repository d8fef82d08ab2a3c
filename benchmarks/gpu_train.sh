#!/usr/bin/env bash
# GPU training inside one device call (issue 12), resumable on the next call.
#
# Once, here (not on the device): pack the training video so that a call can carry it (~29 MiB):
#   python benchmarks/gpu_train_prepare.py            # -> .gpu_data/videos/*.mp4 (git-ignored)
# First call:
#   run(command="bash benchmarks/gpu_train.sh", carry=[".gpu_data"], timeout_s=590)
# Second call, continuing from the first: copy the returned encoder_fp16.pt into
# .gpu_data/resume/ here, then the same run(...) again: the script starts from it.
#
# What it does: installs the package (--no-deps: the GPU machine has torch, cv2, typer, rich),
# then mast-train on CUDA (bf16 autocast) from the colour prior with frozen batch norms, read-out only
# (the recipe of the shipped v3; docs/TRAINING.md), or from
# .gpu_data/resume/encoder_fp16.pt), stopped by SIGINT after TRAIN_SECONDS (the trainer finishes
# the step and saves), and writes into $OUT: encoder_fp16.pt (the official layout, ~10 MB: the
# resume point and what mast-eval --checkpoint scores), metrics.jsonl, loss.png, gpu_train.log.
# The resume point is the weights, not last.pt: last.pt (weights + Adam moments, 64 MB) does not
# fit the device tool's transfers (16 MiB a file, 64 MiB a call with the working tree), so the
# second call restarts Adam's moments and the LR schedule from the stored weights.
#
# Settings (environment): STEPS (5000), TRAIN_SECONDS (470), STAGE (pair), SIZE (256),
# BATCH (24), LR (1e-4; use 3e-6 with TRAINABLE=all), TRAINABLE (readout: the v3 recipe), DEVICE (cuda; cpu for the smoke test), AMP (bf16), DATA (.gpu_data/videos),
# RESUME (.gpu_data/resume/encoder_fp16.pt).
# CPU smoke test: STEPS=2 SIZE=64 BATCH=2 DEVICE=cpu OUT=/tmp/gt bash benchmarks/gpu_train.sh
set -u -o pipefail
out=${OUT:-gpu_train_out}
mkdir -p "$out"
log="$out/gpu_train.log"
run_dir=$(mktemp -d)
export PYTHONUNBUFFERED=1
data=${DATA:-.gpu_data/videos}
resume=${RESUME:-.gpu_data/resume/encoder_fp16.pt}
init=colour-prior
[ -f "$resume" ] && init=$resume
if [ ! -d "$data" ]; then
  echo "no training data at $data: run python benchmarks/gpu_train_prepare.py here and carry .gpu_data" | tee -a "$log"
  exit 2
fi

if [ "${DEVICE:-cuda}" = cuda ]; then
  python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tee -a "$log"
  nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 | tee -a "$log"
fi
echo "== training from $init for at most ${TRAIN_SECONDS:-470} s" | tee -a "$log"
start=$SECONDS
timeout -s INT "${TRAIN_SECONDS:-470}" python3 -m mast.training.cli --data "$data" --out "$run_dir" \
  --steps "${STEPS:-5000}" --stage "${STAGE:-pair}" --size "${SIZE:-256}" --batch-size "${BATCH:-24}" \
  --lr "${LR:-1e-4}" --trainable "${TRAINABLE:-readout}" --init "$init" --batchnorm frozen --device "${DEVICE:-cuda}" --amp "${AMP:-bf16}" \
  --save-every 1000 2>&1 | tr '\r' '\n' | grep -v "^step [0-9]*/[0-9]* " | tee -a "$log"
echo "== training: rc=$? in $((SECONDS - start)) s" | tee -a "$log"

python3 - "$run_dir" "$out" <<'EOF' 2>&1 | tee -a "$log"
import json, shutil, sys
from pathlib import Path
from mast.core.checkpoint import load_encoder, save_checkpoint
run, out = Path(sys.argv[1]), Path(sys.argv[2])
save_checkpoint(out / "encoder_fp16.pt", load_encoder(run / "encoder.pt"), half=True)
for name in ("metrics.jsonl", "loss.png"):
    if (run / name).exists():
        shutil.copy2(run / name, out / name)
rows = [json.loads(line) for line in open(run / "metrics.jsonl") if '"loss"' in line]
print(f"saved {out / 'encoder_fp16.pt'} after {rows[-1]['step']} steps "
      f"({rows[-1]['samples_per_s']:.1f} samples/s at the end, last loss {rows[-1]['loss']:.4f})")
EOF
rm -rf "$run_dir"
echo "done; files in $out" | tee -a "$log"
