#!/usr/bin/env bash
# The prepared device check for a session lent an NVIDIA GPU (issue 6), 3-9 minutes:
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=590)
# Installs the package (no deps: the GPU machine has torch, triton, cv2, typer, rich), then, each
# step under its own time limit so that a hang loses only that step:
#   1. the GPU, driver, torch and Triton versions;
#   2. the Triton kernel and the torch backend on the GPU (tests/plugins, the kernel backend tests);
#   3. the kernel alone vs the reference attention (benchmarks/bench_gpu_attention.py, fp16 and fp32);
#   4. the streaming tracker (mast-bench --backend torch --device cuda): 480x854 fp16 and fp32, 240x427 fp16.
# Everything goes to $OUT (or ./gpu_check_out): gpu_check.log and the mast-bench JSON files (the
# device tool brings back at most 8 files).
set -u -o pipefail
out=${OUT:-gpu_check_out}
mkdir -p "$out"
log="$out/gpu_check.log"
export PYTHONUNBUFFERED=1

step() {   # step NAME SECONDS COMMAND...: run COMMAND under a limit, its output into the log
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s): $*" | tee -a "$log"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  echo "== $name: rc=$? in $((SECONDS - start)) s" | tee -a "$log"
}

step install 60 python3 -m pip install -q --no-deps --no-build-isolation -e .
step versions 20 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv;
  python3 -c "import torch, triton; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__, torch.cuda.get_device_name())"'
step tests 150 python3 -m pytest -q -p no:cacheprovider tests/plugins tests/runtime/test_torch_backend_kernel.py
bench() {   # bench SIZE PRECISION: mast-bench of the torch backend on CUDA, JSON into $out
  step "bench_$1_$2" 60 python3 -m mast.runtime.bench --backend torch --device cuda --size "$1" --precision "$2" \
       --frames 300 --warmup 20 --json "$out/bench_$1_$2.json"
}
# most wanted first: the whole command must end inside the device tool's 600 s (worst case ~560 s)
step kernel_fp16 75 python3 benchmarks/bench_gpu_attention.py --sizes 480x854,240x427 --repeats 100 --fp16
bench 480x854 fp16
step kernel_fp32 75 python3 benchmarks/bench_gpu_attention.py --sizes 480x854,240x427 --repeats 100
bench 480x854 fp32
bench 240x427 fp16
echo "done; files in $out" | tee -a "$log"
