#!/usr/bin/env bash
# The GPU check of issue 28, in one go: on a machine with an NVIDIA GPU it runs
# benchmarks/gpu_check.py (ONNX Runtime CUDA FP32 / FP16 and TensorRT FP16 / INT8 against PyTorch on
# the GPU, parity and speed, and a bf16 training step with its throughput) and writes one table;
# on a CPU-only machine it says so in one sentence and exits 0, so CI and CPU sessions can call it.
#
#   bash benchmarks/gpu_check.sh [--work DIR] [--out TABLE.md] [--rounds 5] [--model gamma-vit-b-16]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"

# A GPU is there when the driver lists one and torch can use it (nvidia-smi alone can be present
# in a container without a device).
gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
if [[ "${gpus:-0}" -lt 1 ]] || ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no NVIDIA GPU is usable on this machine ($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || uname -m)), so nothing GPU-side was measured."
    exit 0
fi
exec "$python" "$here/gpu_check.py" "$@"
