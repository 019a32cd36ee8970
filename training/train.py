"""The training program: `python -m training.train --out RUN [config and overrides]`.

The paper's unified recipe (Sec. 4.1) is the default config (configs/unified_sdp.json):
the datasets mixed into one shuffled set, Adam over the trainable parameters only
(adaptive experts, gates, scales, adapter, levels), cosine schedule per iteration,
MSE between the score and the normalised MOS, random crop + flip. Every epoch the
model is evaluated on each dataset's test split (SRCC, PLCC; paper's 10 random
crops and a deterministic protocol), metrics go to RUN/metrics.csv and
RUN/metrics.jsonl, and RUN/last.safetensors and RUN/best.safetensors are written
atomically.

Resuming: RUN/train_state.pt (written every --save-every steps and at each epoch
end) holds the trainable weights, optimizer, scheduler and position. The data
order is a pure function of (seed, epoch) and each sample's crop of (seed, epoch,
index), so `--resume` after a kill continues mid-epoch and ends with the same
parameters as an uninterrupted run.

Scale-out: `torchrun --nproc_per_node=N -m training.train ...` runs DDP
(NCCL on GPUs, gloo on CPU); --batch-size is per process; rank 0 logs,
evaluates and writes checkpoints.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from contract.errors import UserError, read_user_json
from contract.atomic import write_atomically

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "unified_sdp.json"
STATE_FILE = "train_state.pt"
SETTINGS_FILE = "train_config.json"
STATE_FORMAT = "gamma-edge.train-state"

SETTING_KEYS = {
    "model", "prompts", "init_backbone", "scenes_files", "datasets", "datasets_files", "data_root",
    "meta_info_dir", "optimizer", "lr", "betas", "weight_decay", "schedule", "warmup_steps", "min_lr",
    "epochs", "batch_size", "steps_per_epoch", "crop_size", "hflip", "loss", "eval_crops", "eval_seed",
    "eval_batch_size", "eval_every", "eval_before_training", "eval_max_long_side", "seed", "num_workers",
    "save_every", "train_backbone", "patch_embedding", "rank_weight", "group_size",
}
# Settings that may change when a run is resumed: they do not alter what is computed.
RESUME_OVERRIDABLE = {"num_workers"}
PATH_KEYS = ("init_backbone", "data_root", "meta_info_dir")
PATH_LIST_KEYS = ("scenes_files", "datasets_files")
PATCH_EMBEDDINGS = ("random", "dct", "dct-chroma")      # training/patch_init.py


# ---------------------------------------------------------------- settings

def read_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        shipped = CONFIG_DIR / f"{path}.json" if path.suffix != ".json" else CONFIG_DIR / path.name
        if shipped.is_file():
            path = shipped
        else:
            raise UserError(f"training config {path} does not exist "
                                 f"(shipped: {', '.join(p.stem for p in sorted(CONFIG_DIR.glob('*.json')) if p.stem != 'datasets')})")
    data = read_user_json(path, "training config")
    data = {k: v for k, v in data.items() if k != "about"}
    unknown = sorted(set(data) - SETTING_KEYS)
    if unknown:
        raise UserError(f"training config {path} has unknown keys {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(SETTING_KEYS))}")
    base = json.loads(DEFAULT_CONFIG.read_text())
    base.pop("about", None)
    base.update(data)
    return base


def check_settings(s: dict) -> dict:
    if s["optimizer"] != "adam":
        raise UserError(f"optimizer '{s['optimizer']}' is not supported (adam)")
    if s["schedule"] not in ("cosine", "constant"):
        raise UserError(f"schedule '{s['schedule']}' is not supported (cosine, constant)")
    if s["loss"] != "mse":
        raise UserError(f"loss '{s['loss']}' is not supported (mse)")
    rank_weight, group_size = s["rank_weight"], s["group_size"]
    if not isinstance(rank_weight, (int, float)) or isinstance(rank_weight, bool) or rank_weight < 0:
        raise UserError(f"rank_weight must be a number >= 0, not {rank_weight!r}")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 0:
        raise UserError(f"group_size must be an integer >= 0, not {group_size!r}")
    if rank_weight > 0 and group_size < 2:
        raise UserError("rank_weight needs batches holding several versions of a photo: set group_size "
                             "(--group-size 4) as well")
    if group_size > s["batch_size"]:
        raise UserError(f"group_size {group_size} is larger than batch_size {s['batch_size']}")
    if s["prompts"] not in ("sdp", "plain"):
        raise UserError(f"prompts must be 'sdp' or 'plain', not '{s['prompts']}'")
    from contract.manifest import CROP_PROTOCOLS as PROTOCOLS
    for protocol in s["eval_crops"]:
        if protocol not in PROTOCOLS:
            raise UserError(f"unknown crop protocol '{protocol}'; known: {', '.join(PROTOCOLS)}")
    for key in ("epochs", "batch_size", "crop_size", "eval_batch_size"):
        if not isinstance(s[key], int) or s[key] < 1:
            raise UserError(f"{key} must be a positive integer, not {s[key]!r}")
    if not s["datasets"]:
        raise UserError("no datasets selected; pass --datasets NAME[:ROOT] ...")
    if s["patch_embedding"] not in PATCH_EMBEDDINGS:
        raise UserError(f"patch_embedding must be one of {', '.join(PATCH_EMBEDDINGS)}, "
                             f"not '{s['patch_embedding']}'")
    if s["patch_embedding"] != "random" and s["init_backbone"]:
        raise UserError(f"patch_embedding '{s['patch_embedding']}' replaces a random backbone's patch convolution; "
                             "drop it when initialising from pretrained weights (--init-backbone)")
    return s


def absolute_paths(s: dict) -> dict:
    """Make every path absolute so that a resumed run finds the same files from any folder."""
    for key in PATH_KEYS:
        if s.get(key):
            s[key] = str(Path(s[key]).expanduser().resolve())
    for key in PATH_LIST_KEYS:
        s[key] = [str(Path(p).expanduser().resolve()) for p in s.get(key) or []]
    datasets = []
    for item in s["datasets"]:
        name, sep, root = str(item).partition(":")
        datasets.append(f"{name}:{Path(root).expanduser().resolve()}" if sep and root else name)
    s["datasets"] = datasets
    return s


# ---------------------------------------------------------------- distributed

class Distributed:
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""

    def __init__(self, device: str | None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
        if cuda:
            self.device = torch.device(f"cuda:{self.local_rank}" if self.world > 1 or device in (None, "cuda")
                                       else device)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device(device or "cpu")
        if self.world > 1:
            import datetime

            # Rank 0 evaluates while the others wait at a barrier: allow a long evaluation.
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                                 timeout=datetime.timedelta(hours=3))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, items: list) -> list:
        if self.world == 1:
            return items
        gathered = [None] * self.world
        torch.distributed.all_gather_object(gathered, items)
        return [x for part in gathered for x in part]

    def close(self):
        if self.world > 1:
            torch.distributed.destroy_process_group()


# ---------------------------------------------------------------- model, optimizer, schedule

def build_model(s: dict, seed: int):
    from gamma_edge.factory import create_model

    model = create_model(s["model"], prompts=s["prompts"], scene_files=s["scenes_files"],
                         init_backbone=s["init_backbone"], seed=seed)
    if s["train_backbone"]:
        model.set_trainable(backbone=True)
    if s["patch_embedding"] != "random":      # fixed frequency bank, frozen (training/patch_init.py)
        from training.patch_init import CHROMA_CHANNELS, dct_patch_bank
        conv = model.clip.visual.conv1
        chroma = CHROMA_CHANNELS if s["patch_embedding"] == "dct-chroma" else 0
        with torch.no_grad():
            conv.weight.copy_(dct_patch_bank(conv.out_channels, conv.kernel_size[0], chroma=chroma))
        conv.requires_grad_(False)
    return model


def cosine_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def frozen_fingerprint(model) -> str:
    """sha256 of every frozen tensor: proves a resumed run rebuilt the same backbone."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            digest.update(name.encode())
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- state and logs

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


def key_metric(results: dict, protocol: str) -> float:
    """Model selection: mean SRCC over the evaluated datasets under the first protocol."""
    values = [by[protocol]["srcc"] for by in results.values() if by[protocol]["images"] > 0]
    return float(sum(values) / len(values)) if values else float("nan")


# ---------------------------------------------------------------- the run

def machine(device: torch.device) -> str:
    """What trained an epoch, for its log record: CPU weights depend on the CPU kind and the thread count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {torch.cuda.device_count()} GPU(s) visible"
    from contract.hardware import detect_cpu
    threads = torch.get_num_threads()
    return f"{detect_cpu().describe()}; {threads} thread{'s' if threads != 1 else ''}"


def train(s: dict, out: Path, resume: bool = False, device: str | None = None, progress: bool = True,
          stop_after_steps: int | None = None) -> dict:
    """Run (or continue) a training run in `out`; returns the last evaluation record."""
    run = TrainingRun(s, out, device, progress, stop_after_steps)
    if not run.start(resume):
        return {}
    record = {}
    for epoch in range(run.position["epoch"], s["epochs"]):
        seen, started, bad_paths = run.train_epoch(epoch)
        record = run.end_epoch(epoch, seen, started, bad_paths)
    run.dist.close()
    return record


def rank_loss(predicted: torch.Tensor, target: torch.Tensor, groups: list[str], valid: torch.Tensor) -> torch.Tensor:
    """Pairwise order within a photo: over each pair of readable versions of one photo (same
    non-empty group) with target_i > target_j, relu((target_i - target_j) - (predicted_i - predicted_j)):
    the better version must score higher by at least the targets' gap. Mean over the batch's pairs
    (0 when it has none). MSE alone fits each photo's absolute level; this term asks for the order
    within a photo, which is what ranking a photo's versions (and the pristine-vs-degraded pairs) needs."""
    codes = {g: k for k, g in enumerate(dict.fromkeys(groups))}
    group = torch.tensor([codes[g] if g else -1 - k for k, g in enumerate(groups)], device=predicted.device)
    same = (group[:, None] == group[None, :]) & valid[:, None] & valid[None, :]
    gap = target[:, None] - target[None, :]
    pairs = same & (gap > 1e-6)
    shortfall = torch.relu(gap - (predicted[:, None] - predicted[None, :]))
    return (shortfall * pairs).sum() / pairs.sum().clamp(min=1)


class TrainingRun:
    """One training run's state, built in the order a failure should surface: data first (a wrong
    path fails before minutes of model building), then the model, optimizer and schedule."""

    def __init__(self, s: dict, out: Path, device: str | None, progress: bool, stop_after_steps: int | None):
        self.s, self.out, self.progress, self.stop_after_steps = s, out, progress, stop_after_steps
        self.dist = Distributed(device)
        self.say = (lambda *a: print(*a, flush=True)) if self.dist.main else (lambda *a: None)
        self.state_path = out / STATE_FILE
        self._load_data()
        self._build()
        self.position = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": None,
                         "loss_sum": 0.0, "loss_count": 0, "skipped_train": 0}

    # -- building ---------------------------------------------------------------------------
    def _load_data(self) -> None:
        from training.datasets import load_dataset, load_registry, resolve_datasets

        s = self.s
        self.specs = resolve_datasets(s["datasets"], load_registry(s["datasets_files"]), s["data_root"],
                                      s["meta_info_dir"])
        train_parts = [load_dataset(spec, "train") for spec in self.specs]
        self.eval_parts = [load_dataset(spec, "eval") for spec in self.specs] if s["eval_every"] else []
        self.samples = [sample for part in train_parts for sample in part.samples]
        if not self.samples:
            raise UserError("the selected datasets have no training images")
        self.skipped = sorted({item for part in train_parts + self.eval_parts for item in part.skipped})
        for path, reason in self.skipped:
            self.say(f"skipping {path}: {reason}")

    def _build(self) -> None:
        s, dist = self.s, self.dist
        model = build_model(s, s["seed"])
        for spec in self.specs:
            if spec.scene not in model.scenes:
                raise UserError(f"dataset '{spec.name}' needs scene '{spec.scene}', which is not among the "
                                     f"model's scenes ({', '.join(model.scenes)}); add it with --scenes-file")
        self.fingerprint = frozen_fingerprint(model)
        model.to(dist.device)
        self.model, self.trainable = model, model.trainable_parameters()
        self.optimizer = torch.optim.Adam(list(self.trainable.values()), lr=s["lr"], betas=tuple(s["betas"]),
                                          weight_decay=s["weight_decay"])
        steps = len(self.order(0)) // s["batch_size"]
        if s["steps_per_epoch"]:
            steps = min(steps, int(s["steps_per_epoch"]))
        if steps < 1:
            raise UserError(f"{len(self.samples)} training images make no batch of {s['batch_size']} "
                                 f"per process ({dist.world} processes)")
        self.steps_per_epoch = steps
        total_steps = steps * s["epochs"]
        min_ratio = s["min_lr"] / s["lr"] if s["lr"] else 0.0
        if s["schedule"] == "cosine":
            schedule = lambda step: cosine_factor(step, total_steps, s["warmup_steps"], min_ratio)  # noqa: E731
        else:
            schedule = lambda step: 1.0  # noqa: E731
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

    def order(self, epoch: int, start: int = 0):
        """This process's sample order for `epoch`, from sample `start` (training.loading.EpochOrder)."""
        from training.loading import EpochOrder

        s, dist = self.s, self.dist
        return EpochOrder(len(self.samples), s["seed"], epoch, dist.rank, dist.world, start,
                          groups=[sample.group for sample in self.samples], group_size=s["group_size"])

    def _restore(self) -> bool:
        """Continue a killed run exactly: trainable weights, optimizer, schedule, RNG, position.
        False when the run is already complete."""
        s = self.s
        state = load_state(self.state_path)
        if state["frozen_sha256"] != self.fingerprint:
            raise UserError(f"cannot resume {self.out}: the rebuilt model's frozen weights differ from the run's "
                                 "(was the --init-backbone file changed?)")
        with torch.no_grad():
            for name, p in self.trainable.items():
                p.copy_(state["trainable"][name].to(p.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.position = {k: state[k] for k in self.position}
        if self.position["epoch"] >= s["epochs"]:
            self.say(f"{self.out} is complete ({s['epochs']} epochs); nothing to resume")
            self.dist.close()
            return False
        self.say(f"resuming {self.out} at epoch {self.position['epoch'] + 1}, step {self.position['step_in_epoch']} "
                 f"of {self.steps_per_epoch} (global step {self.position['global_step']})")
        return True

    def start(self, resume: bool) -> bool:
        """Restore (if resuming), wrap for DDP, announce, evaluate before training. False: nothing to do."""
        from training.loading import TrainingImages

        s, dist, model = self.s, self.dist, self.model
        if resume and not self._restore():
            return False
        self.network = model
        if dist.world > 1:
            # Every trainable parameter is used in every step (each batch runs the vision tower
            # and at least one scene's text tower through all MoAE blocks), so no unused-parameter scan.
            self.network = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
        self.log = MetricsLog(self.out)
        self.machine = machine(dist.device)
        self.images = TrainingImages(self.samples, s["crop_size"], s["hflip"])
        self.first_protocol = s["eval_crops"][0] if s["eval_crops"] else None
        n_params = sum(p.numel() for p in model.parameters())
        n_trainable = sum(p.numel() for p in self.trainable.values())
        self.say(f"{s['model']} ({s['prompts']} prompts): {n_trainable / 1e6:.2f}M of {n_params / 1e6:.2f}M parameters "
                 f"train; {len(self.samples)} training images from {len(self.specs)} datasets; {self.steps_per_epoch} "
                 f"steps/epoch x {s['epochs']} epochs, batch {s['batch_size']} x {dist.world} process(es) on "
                 f"{dist.device}")
        if not resume and s["eval_before_training"] and s["eval_every"]:
            if dist.main:
                record = self.evaluate_and_log({"epoch": 0, "global_step": 0, "lr": self.scheduler.get_last_lr()[0]})
                self.log.append(record)
            dist.barrier()
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dist.device.type == "cuda")
        return True

    # -- one epoch ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> tuple[int, float, list[str]]:
        """The epoch's steps (from where a killed run stopped); returns (images seen, start time, unreadable paths)."""
        from tqdm import tqdm

        s, dist, position = self.s, self.dist, self.position
        start = position["step_in_epoch"] if epoch == position["epoch"] else 0
        order = self.order(epoch, start * s["batch_size"])
        loader = torch.utils.data.DataLoader(self.images, batch_size=s["batch_size"], sampler=order, drop_last=True,
                                             num_workers=s["num_workers"], pin_memory=dist.device.type == "cuda")
        self.model.train()
        bar = tqdm(total=self.steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{s['epochs']}", unit="step",
                   disable=not (dist.main and self.progress), dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30)   # a log file gets a line per 30 s
        started, seen, bad_paths, batches = time.perf_counter(), 0, [], None
        for step in range(start, self.steps_per_epoch):
            if step == start:
                batches = iter(loader)
            batch = next(batches)
            loss, count = self._step(batch, bad_paths)
            position["global_step"] += 1
            position["step_in_epoch"] = step + 1
            position["loss_sum"] += loss
            position["loss_count"] += 1
            seen += count * dist.world
            bar.update(1)
            bar.set_postfix(loss=f"{position['loss_sum'] / position['loss_count']:.4f}",
                            img_s=f"{seen / (time.perf_counter() - started):.1f}")
            self._save_within_epoch(epoch, step)
            if self.stop_after_steps and position["global_step"] >= self.stop_after_steps:
                bar.close()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(99)      # a debug kill: no clean-up, no final save, like SIGKILL
        bar.close()
        del batches
        return seen, started, bad_paths

    def _step(self, batch: dict, bad_paths: list) -> tuple[float, int]:
        """One optimizer step; returns (loss, images in the batch)."""
        device = self.dist.device
        images_in = batch["image"].to(device, non_blocking=True)
        target = batch["target"].to(device)
        valid = batch["valid"].to(device)
        if not bool(valid.all()):
            bad_paths += [p for p, ok in zip(batch["path"], batch["valid"].tolist()) if not ok]
        with self.autocast:
            predicted = self.network(images_in, list(batch["scene"]))
        # MSE on the normalised MOS over readable images; an all-unreadable batch still
        # runs backward (zero gradient) so DDP processes stay in step.
        weight = valid.float()
        loss = ((predicted.float() - target) ** 2 * weight).sum() / weight.sum().clamp(min=1)
        if self.s["rank_weight"] > 0:
            loss = loss + self.s["rank_weight"] * rank_loss(predicted.float(), target, list(batch["group"]), valid)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach()), images_in.shape[0]

    def _save_within_epoch(self, epoch: int, step: int) -> None:
        s = self.s
        if s["save_every"] and self.position["global_step"] % s["save_every"] == 0 and step + 1 < self.steps_per_epoch:
            if self.dist.main:
                save_state(self.state_path, self.model, self.optimizer, self.scheduler,
                           {**self.position, "epoch": epoch}, self.fingerprint)

    def end_epoch(self, epoch: int, seen: int, started: float, bad_paths: list[str]) -> dict:
        """Gather the epoch's loss and unreadable images, evaluate, save last/best and the state."""
        s, dist, position = self.s, self.dist, self.position
        loss_sum, loss_count = dist.sum([position["loss_sum"], position["loss_count"]])
        bad_paths = sorted(set(dist.gather(bad_paths)))
        for path in bad_paths:
            self.say(f"skipped {path}: unreadable image")
        position["skipped_train"] += len(bad_paths)
        record = {"epoch": epoch + 1, "global_step": position["global_step"],
                  "train_loss": loss_sum / max(1, loss_count), "lr": self.scheduler.get_last_lr()[0],
                  "images_per_s": seen / max(1e-9, time.perf_counter() - started),
                  "skipped_images": len(self.skipped) + position["skipped_train"], "machine": self.machine}
        position.update(epoch=epoch + 1, step_in_epoch=0, loss_sum=0.0, loss_count=0)
        if dist.main:
            evaluate_now = s["eval_every"] and ((epoch + 1) % s["eval_every"] == 0 or epoch + 1 == s["epochs"])
            if evaluate_now:
                record = self.evaluate_and_log(record)
            self._save_checkpoints(epoch, record)
            self.log.append(record)
            save_state(self.state_path, self.model, self.optimizer, self.scheduler, position, self.fingerprint)
            self.say(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, {record['images_per_s']:.1f} img/s"
                     + (f", mean SRCC ({self.first_protocol}) {record['key_metric']:.4f}" if "key_metric" in record
                        else ""))
        dist.barrier()
        return record

    def _save_checkpoints(self, epoch: int, record: dict) -> None:
        """last.safetensors every epoch; best.safetensors when the key metric improves."""
        from gamma_edge.checkpoint import save_checkpoint

        extra = {"epoch": epoch + 1, "global_step": self.position["global_step"], "settings": self.s,
                 "metrics": record.get("eval", {})}
        save_checkpoint(self.model, self.out / "last.safetensors", extra=extra)
        metric = record.get("key_metric")
        best = self.position["best"]
        if metric is not None and not math.isnan(metric) and (best is None or metric > best):
            self.position["best"] = metric
            save_checkpoint(self.model, self.out / "best.safetensors", extra={**extra, "key_metric": metric})
            record["best"] = True

    def evaluate_and_log(self, record: dict) -> dict:
        from training.evaluate import evaluate_parts, format_table

        s = self.s
        if not self.eval_parts or not self.first_protocol:
            return record
        results, eval_skipped = evaluate_parts(self.model, self.eval_parts, s["eval_crops"], self.dist.device,
                                               s["eval_batch_size"], s["num_workers"], s["eval_seed"],
                                               s["eval_max_long_side"], s["crop_size"])
        for path, reason in eval_skipped:
            if (path, reason) not in self.skipped:
                self.say(f"skipped {path}: {reason}")
        record["eval"] = results
        record["key_metric"] = key_metric(results, self.first_protocol)
        record["skipped_images"] = record.get("skipped_images", 0) + len({p for p, _ in eval_skipped})
        self.say(format_table(results, {sp.name: sp.title or sp.name for sp in self.specs}))
        return record


# ---------------------------------------------------------------- command line

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train Gamma (CLIP + MoAE + scene prompts). The default config is the paper's unified SDP "
                    "recipe (configs/unified_sdp.json); flags override it. Scale out with "
                    "`torchrun --nproc_per_node=N -m training.train ...`.",
        epilog="Examples:\n"
               "  python -m training.synth --out data/synthetic\n"
               "  python -m training.train --config synthetic_tiny --datasets synthetic:data/synthetic --out runs/tiny\n"
               "  python -m training.train --data-root /data/iqa --init-backbone UniQA_weight.pt --out runs/unified\n"
               "  python -m training.train --out runs/unified --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="run folder: checkpoints, metrics, resume state")
    parser.add_argument("--config", default=None, help="a training config: a shipped name (unified_sdp, synthetic_tiny) or a JSON file (default: unified_sdp)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    g = parser.add_argument_group("model")
    g.add_argument("--model", help="model config: gamma-vit-b-16, gamma-tiny, or a .json file")
    g.add_argument("--prompts", choices=["sdp", "plain"], help="scene-based differential prompts or plain '{level} image'")
    g.add_argument("--init-backbone", help="OpenAI-format CLIP / UniQA weights to initialise the backbone from")
    g.add_argument("--scenes-file", dest="scenes_files", action="append", help="a JSON file adding scenes")
    g.add_argument("--train-backbone", action="store_true", default=None,
                   help="also train the vision backbone (departs from the paper, which keeps it frozen; "
                        "for a backbone without pretrained weights, such as the demo model)")
    g.add_argument("--patch-embedding", choices=PATCH_EMBEDDINGS,
                   help="a random backbone's patch convolution: its random init (default), or a frozen bank of "
                        "colour means and luma DCT basis functions that lets a small tower learn noise "
                        "(dct), or that bank with 16 of its channels on colour differences, for colour noise "
                        "(dct-chroma; training/patch_init.py; the demo model)")
    g = parser.add_argument_group("data")
    g.add_argument("--datasets", nargs="+", metavar="NAME[:ROOT]", help="datasets to mix (registry names)")
    g.add_argument("--datasets-file", dest="datasets_files", action="append", help="a JSON file adding datasets")
    g.add_argument("--data-root", help="folder holding one folder per dataset (the registry's 'folder')")
    g.add_argument("--meta-info-dir", help="folder of meta-info CSV and split files (IQA-PyTorch's datasets/meta_info)")
    g.add_argument("--num-workers", type=int, help="image decoding workers per process")
    g.add_argument("--crop-size", type=int)
    g.add_argument("--no-hflip", dest="hflip", action="store_false", default=None, help="no random horizontal flip")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="images per step and process")
    g.add_argument("--steps-per-epoch", type=int, help="cap the steps of an epoch (smoke runs)")
    g.add_argument("--schedule", choices=["cosine", "constant"])
    g.add_argument("--warmup-steps", type=int)
    g.add_argument("--rank-weight", type=float, metavar="W",
                   help="add W x a pairwise ranking loss over versions of one photo in a batch (the dataset's "
                        "group_column; needs --group-size; default 0: MSE alone)")
    g.add_argument("--group-size", type=int, metavar="N",
                   help="build batches from runs of N versions of one photo (default 0: a plain shuffle)")
    g.add_argument("--seed", type=int)
    g.add_argument("--save-every", type=int, help="write the resume state every N steps (and at each epoch end)")
    g = parser.add_argument_group("evaluation")
    g.add_argument("--eval-crops", nargs="+", help="crop protocols: random10 center five grid (the first selects best)")
    g.add_argument("--eval-every", type=int, help="evaluate every N epochs (0: never)")
    g.add_argument("--eval-before-training", action="store_true", default=None, help="also evaluate the initial model")
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--eval-max-long-side", type=int, help="shrink test images whose longer side exceeds this "
                                                         "(the runtime manifest's 512) before cropping")
    g = parser.add_argument_group("run")
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available; under torchrun cuda:LOCAL_RANK)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--stop-after-steps", type=int, help=argparse.SUPPRESS)   # tests: hard-exit like a kill
    return parser.parse_args(argv)


def settings_from_args(args) -> dict:
    out = Path(args.out)
    overrides = {k: v for k, v in vars(args).items() if k in SETTING_KEYS and v is not None}
    if args.resume:
        if not (out / STATE_FILE).is_file() or not (out / SETTINGS_FILE).is_file():
            raise UserError(f"{out} holds no run to resume (no {STATE_FILE} / {SETTINGS_FILE})")
        fixed = sorted(set(overrides) - RESUME_OVERRIDABLE) + (["config"] if args.config else [])
        if fixed:
            raise UserError(f"--resume continues the run as configured in {out / SETTINGS_FILE}; "
                                 f"drop --{fixed[0].replace('_', '-')}")
        # A setting added after the run began takes the default config's value, which leaves it off.
        settings = {**read_config(DEFAULT_CONFIG), **json.loads((out / SETTINGS_FILE).read_text())}
        settings.update(overrides)
        return settings
    if (out / STATE_FILE).exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    settings = read_config(args.config) if args.config else read_config(DEFAULT_CONFIG)
    settings.update(overrides)
    return absolute_paths(check_settings(settings))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
        out = Path(args.out)
        if int(os.environ.get("RANK", "0")) == 0:
            out.mkdir(parents=True, exist_ok=True)
            if not args.resume:
                (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        train(settings, out, resume=args.resume, device=args.device, progress=not args.no_progress,
              stop_after_steps=args.stop_after_steps)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
