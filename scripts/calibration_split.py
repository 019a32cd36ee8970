"""Copy the training split of a synthetic set (training.synth) into a folder for INT8 calibration.

    python scripts/calibration_split.py DATA_DIR CALIB_DIR

Only photos of the training split are copied, so calibration never sees the held-out photos the
demo model's card reports its figures on.
"""
import csv
import shutil
import sys
from pathlib import Path


def main(data: Path, calib: Path) -> None:
    rows = list(csv.DictReader(open(data / "meta_info.csv", newline="")))
    train = list({r["image_name"]: r for r in rows if r["split"] == "train"}.values())   # pristine rows repeat
    shutil.rmtree(calib, ignore_errors=True)
    for row in train:
        target = calib / row["image_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data / "images" / row["image_name"], target)
    photos = sorted({r["photo"] for r in train})
    print(f"{len(train)} training-split images of {len(photos)} photos ({', '.join(photos)}) -> {calib}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
