"""One training run, from its settings to RUN/last.safetensors and RUN/best.safetensors.

Built in the order a failure should surface: data first (a wrong path fails before minutes
of model building), then the model, optimizer and schedule. Each epoch trains from where a
killed run stopped, then evaluates, logs and saves (rank 0) while the other processes wait.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from contract.errors import UserError
from training import recipe
from training.distributed import Distributed
from training.run_folder import STATE_FILE, MetricsLog, load_state, save_state
from training.settings import TrainingSettings


def train(settings: TrainingSettings, out: Path, resume: bool = False, device: str | None = None,
          progress: bool = True, stop_after_steps: int | None = None) -> dict:
    """Run (or continue) a training run in `out`; returns the last evaluation record."""
    run = TrainingRun(settings, out, device, progress, stop_after_steps)
    if not run.start(resume):
        return {}
    record = {}
    for epoch in range(run.position["epoch"], settings.epochs):
        seen, started, bad_paths = run.train_epoch(epoch)
        record = run.end_epoch(epoch, seen, started, bad_paths)
    run.dist.close()
    return record


def machine(device: torch.device) -> str:
    """What trained an epoch, for its log record: CPU weights depend on the CPU kind and the thread count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {torch.cuda.device_count()} GPU(s) visible"
    from contract.hardware import detect_cpu
    threads = torch.get_num_threads()
    return f"{detect_cpu().describe()}; {threads} thread{'s' if threads != 1 else ''}"


@dataclass
class RunData:
    """The selected datasets: their training samples (mixed), evaluation parts, and what was skipped."""

    specs: list
    samples: list
    eval_parts: list
    skipped: list

    @classmethod
    def load(cls, settings: TrainingSettings, say) -> "RunData":
        from training.datasets import load_dataset, load_registry, resolve_datasets

        specs = resolve_datasets(settings.datasets, load_registry(settings.datasets_files), settings.data_root,
                                 settings.meta_info_dir)
        train_parts = [load_dataset(spec, "train") for spec in specs]
        eval_parts = [load_dataset(spec, "eval") for spec in specs] if settings.eval_every else []
        samples = [sample for part in train_parts for sample in part.samples]
        if not samples:
            raise UserError("the selected datasets have no training images")
        skipped = sorted({item for part in train_parts + eval_parts for item in part.skipped})
        for path, reason in skipped:
            say(f"skipping {path}: {reason}")
        return cls(specs, samples, eval_parts, skipped)


class TrainingRun:
    """One training run's state: data, model, optimizer, schedule and position (what resumes)."""

    def __init__(self, settings: TrainingSettings, out: Path, device: str | None, progress: bool,
                 stop_after_steps: int | None):
        self.settings, self.out, self.progress, self.stop_after_steps = settings, out, progress, stop_after_steps
        self.dist = Distributed(device)
        self.say = (lambda *a: print(*a, flush=True)) if self.dist.main else (lambda *a: None)
        self.state_path = out / STATE_FILE
        self.data = RunData.load(settings, self.say)
        self._build()
        self.position = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": None,
                         "loss_sum": 0.0, "loss_count": 0, "skipped_train": 0}

    # -- building ---------------------------------------------------------------------------
    def _build(self) -> None:
        settings, dist = self.settings, self.dist
        model = recipe.build_model(settings, settings.seed)
        for spec in self.data.specs:
            if spec.scene not in model.scenes:
                raise UserError(f"dataset '{spec.name}' needs scene '{spec.scene}', which is not among the "
                                f"model's scenes ({', '.join(model.scenes)}); add it with --scenes-file")
        self.fingerprint = recipe.frozen_fingerprint(model)
        model.to(dist.device)
        self.model, self.trainable = model, model.trainable_parameters()
        steps = len(self.order(0)) // settings.batch_size
        if settings.steps_per_epoch:
            steps = min(steps, int(settings.steps_per_epoch))
        if steps < 1:
            raise UserError(f"{len(self.data.samples)} training images make no batch of {settings.batch_size} "
                            f"per process ({dist.world} processes)")
        self.steps_per_epoch = steps
        self.optimizer, self.scheduler = recipe.optimizer_and_schedule(list(self.trainable.values()), settings,
                                                                       steps * settings.epochs)

    def order(self, epoch: int, start: int = 0):
        """This process's sample order for `epoch`, from sample `start` (training.loading.EpochOrder)."""
        from training.loading import EpochOrder

        return EpochOrder(len(self.data.samples), self.settings.seed, epoch, self.dist.rank, self.dist.world, start,
                          groups=[sample.group for sample in self.data.samples], group_size=self.settings.group_size)

    def _restore(self) -> bool:
        """Continue a killed run exactly: trainable weights, optimizer, schedule, RNG, position.
        False when the run is already complete."""
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
        if self.position["epoch"] >= self.settings.epochs:
            self.say(f"{self.out} is complete ({self.settings.epochs} epochs); nothing to resume")
            self.dist.close()
            return False
        self.say(f"resuming {self.out} at epoch {self.position['epoch'] + 1}, step {self.position['step_in_epoch']} "
                 f"of {self.steps_per_epoch} (global step {self.position['global_step']})")
        return True

    def start(self, resume: bool) -> bool:
        """Restore (if resuming), wrap for DDP, announce, evaluate before training. False: nothing to do."""
        from training.loading import TrainingImages

        settings, dist, model = self.settings, self.dist, self.model
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
        self.images = TrainingImages(self.data.samples, settings.crop_size, settings.hflip)
        self.selection = ModelSelection(model, self.data, settings, dist.device, self.out, self.say)
        self._announce()
        if not resume and settings.eval_before_training and settings.eval_every:
            if dist.main:
                record = self.selection.evaluate({"epoch": 0, "global_step": 0, "lr": self.scheduler.get_last_lr()[0]})
                self.log.append(record)
            dist.barrier()
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dist.device.type == "cuda")
        return True

    def _announce(self) -> None:
        settings, model = self.settings, self.model
        n_params = sum(p.numel() for p in model.parameters())
        n_trainable = sum(p.numel() for p in self.trainable.values())
        self.say(f"{settings.model} ({settings.prompts} prompts): {n_trainable / 1e6:.2f}M of {n_params / 1e6:.2f}M "
                 f"parameters train; {len(self.data.samples)} training images from {len(self.data.specs)} datasets; "
                 f"{self.steps_per_epoch} steps/epoch x {settings.epochs} epochs, batch {settings.batch_size} x "
                 f"{self.dist.world} process(es) on {self.dist.device}")

    # -- one epoch ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> tuple[int, float, list[str]]:
        """The epoch's steps (from where a killed run stopped); returns (images seen, start time, unreadable paths)."""
        from tqdm import tqdm

        settings, dist, position = self.settings, self.dist, self.position
        start = position["step_in_epoch"] if epoch == position["epoch"] else 0
        order = self.order(epoch, start * settings.batch_size)
        loader = torch.utils.data.DataLoader(self.images, batch_size=settings.batch_size, sampler=order,
                                             drop_last=True, num_workers=settings.num_workers,
                                             pin_memory=dist.device.type == "cuda")
        self.model.train()
        bar = tqdm(total=self.steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{settings.epochs}",
                   unit="step", disable=not (dist.main and self.progress), dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30)   # a log file gets a line per 30 s
        started, seen, bad_paths, batches = time.perf_counter(), 0, [], None
        for step in range(start, self.steps_per_epoch):
            if step == start:
                batches = iter(loader)
            loss, count = self._step(next(batches), bad_paths)
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
        if self.settings.rank_weight > 0:
            loss = loss + self.settings.rank_weight * recipe.rank_loss(predicted.float(), target,
                                                                       list(batch["group"]), valid)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach()), images_in.shape[0]

    def _save_within_epoch(self, epoch: int, step: int) -> None:
        save_every = self.settings.save_every
        if save_every and self.position["global_step"] % save_every == 0 and step + 1 < self.steps_per_epoch:
            if self.dist.main:
                save_state(self.state_path, self.model, self.optimizer, self.scheduler,
                           {**self.position, "epoch": epoch}, self.fingerprint)

    def end_epoch(self, epoch: int, seen: int, started: float, bad_paths: list[str]) -> dict:
        """Gather the epoch's loss and unreadable images, evaluate, save last/best and the state."""
        settings, dist, position = self.settings, self.dist, self.position
        loss_sum, loss_count = dist.sum([position["loss_sum"], position["loss_count"]])
        bad_paths = sorted(set(dist.gather(bad_paths)))
        for path in bad_paths:
            self.say(f"skipped {path}: unreadable image")
        position["skipped_train"] += len(bad_paths)
        record = {"epoch": epoch + 1, "global_step": position["global_step"],
                  "train_loss": loss_sum / max(1, loss_count), "lr": self.scheduler.get_last_lr()[0],
                  "images_per_s": seen / max(1e-9, time.perf_counter() - started),
                  "skipped_images": len(self.data.skipped) + position["skipped_train"], "machine": self.machine}
        position.update(epoch=epoch + 1, step_in_epoch=0, loss_sum=0.0, loss_count=0)
        if dist.main:
            evaluate_now = settings.eval_every and ((epoch + 1) % settings.eval_every == 0
                                                    or epoch + 1 == settings.epochs)
            if evaluate_now:
                record = self.selection.evaluate(record)
            self.selection.save_checkpoints(epoch, record, position)
            self.log.append(record)
            save_state(self.state_path, self.model, self.optimizer, self.scheduler, position, self.fingerprint)
            self.say(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, {record['images_per_s']:.1f} img/s"
                     + (f", mean SRCC ({self.selection.first_protocol}) {record['key_metric']:.4f}"
                        if "key_metric" in record else ""))
        dist.barrier()
        return record


class ModelSelection:
    """Rank 0's end of an epoch: evaluate the model on each dataset's eval part (the first crop
    protocol's mean SRCC is the key metric), and keep last.safetensors and the best one."""

    def __init__(self, model, data: RunData, settings: TrainingSettings, device: torch.device, out: Path, say):
        self.model, self.data, self.settings, self.device, self.out, self.say = model, data, settings, device, out, say
        self.first_protocol = settings.eval_crops[0] if settings.eval_crops else None

    def evaluate(self, record: dict) -> dict:
        from training.evaluate import evaluate_parts, format_table

        settings = self.settings
        if not self.data.eval_parts or not self.first_protocol:
            return record
        results, eval_skipped = evaluate_parts(self.model, self.data.eval_parts, settings.eval_crops, self.device,
                                               settings.eval_batch_size, settings.num_workers, settings.eval_seed,
                                               settings.eval_max_long_side, settings.crop_size)
        for path, reason in eval_skipped:
            if (path, reason) not in self.data.skipped:
                self.say(f"skipped {path}: {reason}")
        record["eval"] = results
        record["key_metric"] = recipe.key_metric(results, self.first_protocol)
        record["skipped_images"] = record.get("skipped_images", 0) + len({p for p, _ in eval_skipped})
        self.say(format_table(results, {sp.name: sp.title or sp.name for sp in self.data.specs}))
        return record

    def save_checkpoints(self, epoch: int, record: dict, position: dict) -> None:
        """last.safetensors every epoch; best.safetensors when the key metric improves (position["best"])."""
        from gamma_edge.checkpoint import save_checkpoint

        extra = {"epoch": epoch + 1, "global_step": position["global_step"], "settings": self.settings.to_dict(),
                 "metrics": record.get("eval", {})}
        save_checkpoint(self.model, self.out / "last.safetensors", extra=extra)
        metric = record.get("key_metric")
        best = position["best"]
        if metric is not None and not math.isnan(metric) and (best is None or metric > best):
            position["best"] = metric
            save_checkpoint(self.model, self.out / "best.safetensors", extra={**extra, "key_metric": metric})
            record["best"] = True
