"""Evaluation: per-dataset SRCC / PLCC of a model on each dataset's test split.

An image's score is the mean over its crops (paper Sec. 4.1: 10 random 224
crops; `center`, `five` and `grid` are the deterministic protocols of
docs/manifest.md). PLCC is reported raw and after the 4-parameter logistic fit.

    python -m training.evaluate --checkpoint best.safetensors --datasets koniq10k:/data/koniq10k \
        [--crops random10 center] [--datasets-file my.json] [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import numpy as np
import torch

from contract.errors import UserError
from contract.manifest import CROP_PROTOCOLS as PROTOCOLS
from training.datasets import DatasetPart
from training.loading import EvaluationImages
from contract.correlation import correlations


@torch.no_grad()
def evaluate_parts(model, parts: Sequence[DatasetPart], protocols: Sequence[str], device="cpu",
                   batch_size: int = 8, num_workers: int = 0, seed: int = 0, max_long_side: int | None = None,
                   crop_size: int = 224, progress: bool = False) -> tuple[dict, list]:
    """{dataset: {protocol: {"srcc", "plcc", "plcc_fit", "images"}}} and the skipped (path, reason) pairs."""
    from tqdm import tqdm

    device = torch.device(device)
    was_training = model.training
    model.eval()
    results, skipped = {}, []
    try:
        for part in parts:
            images = EvaluationImages(part.samples, protocols, crop_size, seed, max_long_side)
            loader = torch.utils.data.DataLoader(images, batch_size=batch_size, num_workers=num_workers,
                                                 shuffle=False, pin_memory=device.type == "cuda")
            predictions = {p: np.full(len(images), np.nan) for p in protocols}
            valid = np.zeros(len(images), dtype=bool)
            # Text features of the dataset's scene are computed once for the whole evaluation.
            text = model.text_features(part.spec.scene).unsqueeze(0)
            for batch in tqdm(loader, desc=f"eval {part.spec.name}", disable=not progress, leave=False):
                index = batch["index"].numpy()
                valid[index] = batch["valid"].numpy()
                for protocol in protocols:
                    crops = batch[protocol].to(device, non_blocking=True)          # (B, K, 3, c, c)
                    b, k = crops.shape[:2]
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                        features = model.image_features(crops.flatten(0, 1))
                        scores = model.head(features, text, model.clip.logit_scale)[:, 0]
                    predictions[protocol][index] = scores.float().view(b, k).mean(1).cpu().numpy()
            skipped += [(s.path, "unreadable image") for s, ok in zip(part.samples, valid) if not ok]
            skipped += part.skipped
            target = np.array([s.target for s in part.samples])
            results[part.spec.name] = {
                protocol: {**correlations(predictions[protocol][valid], target[valid]), "images": int(valid.sum())}
                for protocol in protocols}
    finally:
        model.train(was_training)
    return results, skipped


def format_table(results: dict, titles: dict | None = None) -> str:
    """A fixed-width table: one row per dataset and protocol."""
    titles = titles or {}
    lines = [f"{'dataset':<24} {'protocol':<9} {'images':>7} {'SRCC':>7} {'PLCC':>7} {'PLCC-fit':>8}"]
    for name, by_protocol in results.items():
        for protocol, m in by_protocol.items():
            lines.append(f"{titles.get(name, name):<24} {protocol:<9} {m['images']:>7} {m['srcc']:>7.4f} "
                         f"{m['plcc']:>7.4f} {m['plcc_fit']:>8.4f}")
    protocols = list(next(iter(results.values()), {}))
    for protocol in protocols:
        values = [by[protocol] for by in results.values() if protocol in by]
        if len(values) > 1:
            lines.append(f"{'mean':<24} {protocol:<9} {sum(v['images'] for v in values):>7} "
                         f"{np.mean([v['srcc'] for v in values]):>7.4f} {np.mean([v['plcc'] for v in values]):>7.4f} "
                         f"{np.mean([v['plcc_fit'] for v in values]):>8.4f}")
    lines.append("PLCC: Pearson of raw scores; PLCC-fit: after the 4-parameter logistic fit.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Print per-dataset SRCC / PLCC of a gamma-edge checkpoint on each dataset's test split.")
    parser.add_argument("--checkpoint", required=True, help="a gamma-edge checkpoint (.safetensors)")
    parser.add_argument("--datasets", nargs="+", required=True, metavar="NAME[:ROOT]",
                        help="datasets of the registry (configs/datasets.json or --datasets-file), with their root folders")
    parser.add_argument("--datasets-file", action="append", default=[], help="a JSON file adding datasets")
    parser.add_argument("--data-root", help="folder holding one folder per dataset (the registry's 'folder')")
    parser.add_argument("--meta-info-dir", help="folder holding meta-info CSV and split files (IQA-PyTorch's datasets/meta_info)")
    parser.add_argument("--split", default="eval", choices=["eval", "train", "val", "test", "all"],
                        help="which part to score (default: each dataset's evaluation part: test, else val)")
    parser.add_argument("--crops", nargs="+", default=["random10", "center"], choices=PROTOCOLS,
                        help="crop protocols (default: random10 center)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random10 protocol (default 0)")
    parser.add_argument("--max-long-side", type=int, default=None,
                        help="shrink images whose longer side exceeds this first (the runtime's manifest uses 512)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--num-workers", type=int, default=2, help="image decoding workers (default 2)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    try:
        return _evaluate(args)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2


def _evaluate(args) -> int:
    from gamma_edge.checkpoint import load_checkpoint
    from training.datasets import load_dataset, load_registry, resolve_datasets

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    specs = resolve_datasets(args.datasets, load_registry(args.datasets_file), args.data_root, args.meta_info_dir)
    model = load_checkpoint(args.checkpoint, device=device)
    for spec in specs:
        if spec.scene not in model.scenes:
            raise UserError(f"dataset '{spec.name}' is scored as scene '{spec.scene}', which "
                                 f"{args.checkpoint} does not know (it has: {', '.join(model.scenes)})")
    parts = [load_dataset(spec, args.split) for spec in specs]
    results, skipped = evaluate_parts(model, parts, args.crops, device, args.batch_size, args.num_workers,
                                      args.seed, args.max_long_side, progress=sys.stderr.isatty())
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(format_table(results, {s.name: s.title or s.name for s in specs}))
    if skipped:
        print(f"{len(skipped)} images skipped (listed above)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"checkpoint": str(args.checkpoint), "split": args.split, "crops": args.crops,
                       "seed": args.seed, "results": results,
                       "skipped": [{"path": p, "reason": r} for p, r in skipped]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
