#!/usr/bin/env bash
# Rebuild the embedded demo model from nothing but shipped photographs:
#   synthetic set -> training -> FP32 + INT8 ONNX export -> assets + model card.
# Usage: bash scripts/build_demo_model.sh [WORK_DIR]     (needs: pip install -e '.[full]'; ~10 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-build/demo}
mkdir -p "$work"

# 1. Synthetic quality set: 14 photos shipped in scikit-image, 5 distortion kinds at 5 levels. Split
#    seed 3 holds brick, camera, chelsea and hubble out of training entirely (the split is by photo).
#    JPEG and contrast are left out: this recipe did not learn them (docs/training.md).
python -m training.synth --out "$work/data" \
  --kinds gaussian_blur motion_blur gaussian_noise darken brighten --short-side 320 --seed 3 \
  --photos astronaut chelsea coffee rocket motorcycle hubble ihc retina camera moon coins grass brick gravel

# 2. Train: the tiny recipe (training/configs/synthetic_tiny.json) with the vision tower trained from its
#    random start (--train-backbone) behind a frozen DCT patch embedding (--patch-embedding dct, which is
#    what lets it see noise), Adam 1e-3, batch 16, 50 warm-up steps then cosine. The shipped checkpoint
#    is the LAST one, not the best on the held-out photos, so they stay unseen by every choice.
python -m training.train --config synthetic_tiny --datasets synthetic:"$work/data" --out "$work/run" \
  --seed 1 --train-backbone --patch-embedding dct --lr 1e-3 --batch-size 16 --epochs 110 --warmup-steps 50 \
  --eval-every 10 --eval-crops center --no-progress

# 3. Export: FP32, and INT8 (static QDQ, avx2 preset, 300 calibration crops). The preset and method are
#    named, not auto: the shipped graph is the same whatever CPU builds it, and 7-bit weights run faithfully
#    on every x86 CPU (docs/hardware.md). Calibration uses the training split's images only, so the INT8
#    figures on the held-out photos are measured on images calibration never saw.
python scripts/calibration_split.py "$work/data" "$work/calib"
gamma-edge export --checkpoint "$work/run/last.safetensors" --scene natural --out "$work/demo" --overwrite
gamma-edge export --checkpoint "$work/run/last.safetensors" --scene natural --int8 --preset avx2 --int8-method static \
  --calib "$work/calib" --out "$work/demo-int8" --overwrite

# 4. Ship: checkpoint + held-out photos + card in gamma_edge/assets/demo, graphs in runtime/models.
python scripts/ship_demo_model.py "$work"
