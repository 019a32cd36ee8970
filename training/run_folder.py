"""What a training run folder holds besides its checkpoints (last/best.safetensors, the
gamma-edge checkpoint format): the settings (train_config.json), the resume state
(train_state.pt) and the metrics log (metrics.csv, metrics.jsonl)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from contract.atomic import write_atomically
from contract.errors import UserError

STATE_FILE = "train_state.pt"
SETTINGS_FILE = "train_config.json"
STATE_FORMAT = "gamma-edge.train-state"


def save_state(path: Path, model, optimizer, scheduler, position: dict, fingerprint: str) -> None:
    """Atomically write the resume state (plain containers of tensors and numbers only)."""
    state = {
        "format": STATE_FORMAT, "version": 1, **position,
        "trainable": {n: p.detach().cpu().clone() for n, p in model.trainable_parameters().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "frozen_sha256": fingerprint,
    }
    write_atomically(path, lambda temporary: torch.save(state, temporary))


def load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which, without a traceback
        raise UserError(f"resume state {path} cannot be read ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{path} is not a gamma-edge training state")
    return state


class MetricsLog:
    """RUN/metrics.csv (one row per dataset and protocol) and RUN/metrics.jsonl (one object per evaluation)."""

    COLUMNS = ["epoch", "global_step", "dataset", "protocol", "images", "srcc", "plcc", "plcc_fit",
               "train_loss", "lr", "images_per_s", "skipped_images"]

    def __init__(self, out: Path):
        self.csv_path, self.jsonl_path = out / "metrics.csv", out / "metrics.jsonl"

    def append(self, record: dict) -> None:
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(self.COLUMNS)
            for dataset, by_protocol in record.get("eval", {}).items():
                for protocol, m in by_protocol.items():
                    writer.writerow([record["epoch"], record["global_step"], dataset, protocol, m["images"],
                                     f"{m['srcc']:.6f}", f"{m['plcc']:.6f}", f"{m['plcc_fit']:.6f}",
                                     _fmt(record.get("train_loss")), _fmt(record.get("lr")),
                                     _fmt(record.get("images_per_s")), record.get("skipped_images", 0)])
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _fmt(value):
    return "" if value is None else f"{value:.6g}"
