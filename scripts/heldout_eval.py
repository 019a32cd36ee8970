"""Score a model on photos with the held-out degradations (runtime.demo.heldout) and print the table.

    python scripts/heldout_eval.py MODEL_DIR --photos brick camera chelsea hubble [--json OUT]

Used to compare recipes on validation photos (scripts/build_demo_model.sh) without touching the
test photos, which only scripts/ship_demo_model.py scores, once.
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.demo import heldout  # noqa: E402
from runtime import Scorer  # noqa: E402
from training.synth import load_photo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--photos", nargs="+", required=True)
    parser.add_argument("--short-side", type=int, default=320)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    photos = {name: load_photo(name, args.short_side) for name in args.photos}
    rows = list(heldout.items(photos))
    scorer = Scorer(args.model, backend="onnxruntime", device="cpu")
    scores = [r.score for r in scorer.score_many([r.image for r in rows])]
    figures = heldout.evaluate(rows, scores)
    print(f"{args.model} on {', '.join(args.photos)} ({len(rows)} images, {time.perf_counter() - started:.0f} s)")
    print("\n".join(heldout.markdown_table(figures)))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
