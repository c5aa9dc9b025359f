#!/usr/bin/env bash
# The GPU check, run from the repository root on a lent CUDA machine: `bash benchmarks/gpu_check.sh`
# (through the device tool: carry [".whl"], which git ignores; no network is needed).
#  1. installs the wheels in .whl/ into /tmp/site (--no-deps --no-index) and puts /tmp/site and the checkout on
#     PYTHONPATH;
#  2. prints the GPUs and the versions actually imported;
#  3. tests/test_gpu.py and tests/test_patching.py with the compiled Triton kernels (TRITON_INTERPRET=0);
#     test_patching's zoo test is deselected (it builds a zoo first: minutes of CPU, nothing GPU-specific);
#  4. tests/test_kernels.py under Triton's interpreter (TRITON_INTERPRET=1): its tests hand CPU tensors to the kernels,
#     which compiled kernels cannot read, so it cannot join step 3; test_gpu.py reruns those tests on CUDA tensors;
#  5. python3 -m benchmarks.patching_vs_transformer_lens --device cuda --models gpt2 --backends torch,triton;
#  6. leaves log, pytest.xml and patching-cuda.json in $OUT.
# Every step runs even if an earlier one failed; the exit status is 1 if any failed. Expected about 3-4 minutes on an
# H200; the step limits (install 90 s, tests 200 s, interpreter 45 s, benchmark 200 s) bound it near 9 (run it with
# timeout_s 570: the log in $OUT is written as it goes, so even a killed run brings back what it reached).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check-out}
mkdir -p "$OUT"

step() {  # step NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "=== $name: start $(date +%T), limit ${limit}s"
  timeout "$limit" "$@"
  rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start))s"
  [ "$rc" -eq 0 ] || failed+=" $name($rc)"
  return "$rc"
}

main() {
  failed=""
  step install 90 python3 -m pip install -q --no-deps --no-index --no-compile --upgrade --target /tmp/site \
    .whl/*.whl || { echo "FAILED:$failed"; return 1; }
  export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  export TRITON_CACHE_DIR=/tmp/triton-cache
  nvidia-smi -L
  python3 -c '
import importlib.metadata as md, sys
names = ("torch triton transformers transformer-lens datasets tokenizers safetensors huggingface-hub regex pyarrow "
         "fsspec numpy pandas accelerate psutil xxhash dill multiprocess pytest nnsight").split()
def version(n):
    try:
        return md.version(n)
    except md.PackageNotFoundError:
        return "MISSING"
print("python", sys.version.split()[0], "|", ", ".join(f"{n} {version(n)}" for n in names))
import torch, transformers, transformer_lens
print("torch cuda", torch.version.cuda, "| available:", torch.cuda.is_available(), "|", torch.cuda.get_device_name(),
      "| transformers from", transformers.__file__)
'
  step tests 200 env TRITON_INTERPRET=0 python3 -m pytest -v -rs --durations=15 -p no:cacheprovider \
    --junitxml="$OUT/pytest.xml" tests/test_gpu.py tests/test_patching.py \
    --deselect tests/test_patching.py::test_zoo_checkpoint_matches_transformer_lens
  step interpreter-tests 45 env TRITON_INTERPRET=1 python3 -m pytest -q -rs -p no:cacheprovider tests/test_kernels.py
  step benchmark 200 python3 -m benchmarks.patching_vs_transformer_lens --device cuda --models gpt2 \
    --backends torch,triton
  cp benchmarks/results/patching-cuda.json "$OUT/" || failed+=" copy-results"
  if [ -n "$failed" ]; then echo "FAILED:$failed"; return 1; fi
  echo "ALL STEPS PASSED"
}

main 2>&1 | tee "$OUT/log"
