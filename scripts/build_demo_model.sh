#!/usr/bin/env bash
# Rebuild the embedded demo model from nothing but shipped photographs:
#   synthetic set -> training -> FP32 + INT8 ONNX export -> assets + model card.
# Usage: bash scripts/build_demo_model.sh [WORK_DIR]     (needs: pip install -e '.[full]')
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-build/demo}
mkdir -p "$work"

# 1. Synthetic quality set: 8 colour photos shipped in scikit-image, 9 distortions x 5 levels;
#    motorcycle and rocket are held out of training entirely (the split is by photo).
python -m training.synth --out "$work/data" --short-side 320

# 2. Train (training/configs/demo.json states the recipe and why the backbone trains too).
python -m training.train --config demo --datasets synthetic:"$work/data" --out "$work/run" --no-progress

# 3. Export the best checkpoint: FP32, and INT8 calibrated on training photos only.
mkdir -p "$work/calib"
python - "$work" <<'PY'
import csv, json, shutil, sys
from pathlib import Path
work = Path(sys.argv[1])
rows = list(csv.DictReader(open(work / "data" / "meta_info.csv")))
train = set(json.load(open(work / "data" / "split.json"))["1"]["train"])
for i, row in enumerate(rows):
    if i in train:
        shutil.copy(work / "data" / row["image_name"], work / "calib" / row["image_name"].replace("/", "_"))
PY
gamma-edge export --checkpoint "$work/run/best.safetensors" --scene natural --out "$work/demo" --overwrite
gamma-edge export --checkpoint "$work/run/best.safetensors" --scene natural --int8 --calib "$work/calib" \
  --out "$work/demo-int8" --overwrite

# 4. Ship: checkpoint + held-out photos + card in gamma_edge/assets/demo, graphs in runtime/models.
python scripts/ship_demo_model.py "$work"
