"""The model card's classical baselines and its claims: what a user might run instead, on the very
held-out images the card judges the demo model on.

    python scripts/card_baselines.py --brisque-python /tmp/brisque-venv/bin/python

For every held-out image of the card (runtime.demo.tour.held_out_items: each photo pristine and
degraded by runtime.demo.heldout at every level of every kind): the variance of the Laplacian
(sharper is higher) and BRISQUE (the `brisque` package, offline with its shipped SVM; lower is
better, so negated). BRISQUE needs numpy < 2, so it runs in a virtual environment of its own:

    python3 -m venv /tmp/brisque-venv && /tmp/brisque-venv/bin/pip install 'numpy<2' brisque opencv-python-headless

Each is evaluated exactly as the model is (runtime.demo.heldout.evaluate); the figures go into
model_card.json ("classical"), the claims are re-derived with heldout.CLAIM_BAR (within one scene),
and model_card.md is written again (scripts/ship_demo_model.py's writer).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from runtime.demo import heldout  # noqa: E402
from runtime.demo.tour import CARD, held_out_items  # noqa: E402

BRISQUE_PROGRAM = """
import json, sys
import cv2
from brisque import BRISQUE
model = BRISQUE(url=False)
print(json.dumps([float(model.score(cv2.imread(path)[..., ::-1])) for path in sys.argv[1:]]))
"""


def laplacian_variance(bgr: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def brisque_scores(images: list[np.ndarray], python: str) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, image in enumerate(images):
            paths.append(str(Path(folder) / f"{index:05d}.png"))
            cv2.imwrite(paths[-1], image)
        done = subprocess.run([python, "-c", BRISQUE_PROGRAM, *paths], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brisque-python", required=True, help="a Python with brisque and numpy < 2 installed")
    args = parser.parse_args()
    card = json.loads(CARD.read_text())
    items = held_out_items(card)
    images = [item.image for item in items]
    classical = {
        "laplacian": heldout.evaluate(items, [laplacian_variance(image) for image in images], card["kinds"]),
        "brisque": heldout.evaluate(items, [-s for s in brisque_scores(images, args.brisque_python)], card["kinds"]),
    }
    card["classical"] = {method: {kind: {key: round(figures[key], 4) for key in ("srcc", "srcc_min", "pooled", "pairs")}
                                  for kind, figures in per_kind.items()} for method, per_kind in classical.items()}
    claims(card)
    CARD.write_text(json.dumps(card, indent=2) + "\n")
    from ship_demo_model import write_card_markdown

    write_card_markdown(card)
    print(json.dumps(card["classical"], indent=1))


def claims(card: dict) -> None:
    """The card's claims under heldout.CLAIM_BAR, from the figures it holds."""
    card["bar"] = dict(heldout.CLAIM_BAR)
    for figures in card["metrics"]["per_kind"].values():
        figures["claimed"] = all(figures[key] >= bar for key, bar in heldout.CLAIM_BAR.items())
    card["claimed"] = [kind for kind, f in card["metrics"]["per_kind"].items() if f["claimed"]]
    card["not_learned"] = [kind for kind, f in card["metrics"]["per_kind"].items() if not f["claimed"]]


if __name__ == "__main__":
    main()
