"""A training run's settings: the default config (configs/unified_sdp.json, the paper's
recipe), a shipped or user config over it, and command-line flags over both; a resumed
run takes its own RUN/train_config.json instead.

TrainingSettings' fields are in the order of configs/unified_sdp.json, which is the order
train_config.json is written in (and has been since runs were first written).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from contract.errors import UserError, read_user_json
from training.run_folder import SETTINGS_FILE, STATE_FILE

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "unified_sdp.json"
# Settings that may change when a run is resumed: they do not alter what is computed.
RESUME_OVERRIDABLE = {"num_workers"}
PATH_KEYS = ("init_backbone", "data_root", "meta_info_dir")
PATH_LIST_KEYS = ("scenes_files", "datasets_files")
PATCH_EMBEDDINGS = ("random", "dct", "dct-chroma")      # training/patch_init.py


@dataclass
class TrainingSettings:
    """Everything that decides what a run computes (configs/unified_sdp.json explains each)."""

    model: str
    prompts: str
    init_backbone: str | None
    train_backbone: bool
    patch_embedding: str
    scenes_files: list
    datasets: list
    datasets_files: list
    data_root: str | None
    meta_info_dir: str | None
    optimizer: str
    lr: float
    betas: list
    weight_decay: float
    schedule: str
    warmup_steps: int
    min_lr: float
    epochs: int
    batch_size: int
    steps_per_epoch: int | None
    crop_size: int
    hflip: bool
    loss: str
    eval_crops: list
    eval_seed: int
    eval_batch_size: int
    eval_every: int
    eval_before_training: bool
    eval_max_long_side: int | None
    seed: int
    num_workers: int
    save_every: int
    rank_weight: float
    group_size: int

    @classmethod
    def from_dict(cls, data: dict, source: str = SETTINGS_FILE) -> "TrainingSettings":
        """The settings of a complete dict (a config over the default one, or a run's train_config.json)."""
        unknown = sorted(set(data) - set(SETTING_KEYS))
        missing = [key for key in SETTING_KEYS if key not in data]
        if unknown or missing:
            raise UserError(f"training settings in {source} have unknown keys {', '.join(unknown) or 'none'} "
                            f"and lack {', '.join(missing) or 'none'}")
        return cls(**data)

    def to_dict(self) -> dict:
        """What train_config.json and the checkpoints' metadata hold, in the fields' order."""
        return {key: getattr(self, key) for key in SETTING_KEYS}

    def check(self) -> "TrainingSettings":
        """One sentence for the first setting this toolkit cannot run."""
        if self.optimizer != "adam":
            raise UserError(f"optimizer '{self.optimizer}' is not supported (adam)")
        if self.schedule not in ("cosine", "constant"):
            raise UserError(f"schedule '{self.schedule}' is not supported (cosine, constant)")
        if self.loss != "mse":
            raise UserError(f"loss '{self.loss}' is not supported (mse)")
        self._check_ranking()
        if self.prompts not in ("sdp", "plain"):
            raise UserError(f"prompts must be 'sdp' or 'plain', not '{self.prompts}'")
        from contract.manifest import CROP_PROTOCOLS as PROTOCOLS
        for protocol in self.eval_crops:
            if protocol not in PROTOCOLS:
                raise UserError(f"unknown crop protocol '{protocol}'; known: {', '.join(PROTOCOLS)}")
        for key in ("epochs", "batch_size", "crop_size", "eval_batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{key} must be a positive integer, not {value!r}")
        if not self.datasets:
            raise UserError("no datasets selected; pass --datasets NAME[:ROOT] ...")
        self._check_patch_embedding()
        return self

    def _check_ranking(self) -> None:
        rank_weight, group_size = self.rank_weight, self.group_size
        if not isinstance(rank_weight, (int, float)) or isinstance(rank_weight, bool) or rank_weight < 0:
            raise UserError(f"rank_weight must be a number >= 0, not {rank_weight!r}")
        if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 0:
            raise UserError(f"group_size must be an integer >= 0, not {group_size!r}")
        if rank_weight > 0 and group_size < 2:
            raise UserError("rank_weight needs batches holding several versions of a photo: set group_size "
                            "(--group-size 4) as well")
        if group_size > self.batch_size:
            raise UserError(f"group_size {group_size} is larger than batch_size {self.batch_size}")

    def _check_patch_embedding(self) -> None:
        if self.patch_embedding not in PATCH_EMBEDDINGS:
            raise UserError(f"patch_embedding must be one of {', '.join(PATCH_EMBEDDINGS)}, "
                            f"not '{self.patch_embedding}'")
        if self.patch_embedding != "random" and self.init_backbone:
            raise UserError(f"patch_embedding '{self.patch_embedding}' replaces a random backbone's patch "
                            "convolution; drop it when initialising from pretrained weights (--init-backbone)")

    def with_absolute_paths(self) -> "TrainingSettings":
        """Every path made absolute, so that a resumed run finds the same files from any folder."""
        paths = {key: str(Path(getattr(self, key)).expanduser().resolve()) for key in PATH_KEYS if getattr(self, key)}
        path_lists = {key: [str(Path(p).expanduser().resolve()) for p in getattr(self, key) or []]
                      for key in PATH_LIST_KEYS}
        datasets = []
        for item in self.datasets:
            name, sep, root = str(item).partition(":")
            datasets.append(f"{name}:{Path(root).expanduser().resolve()}" if sep and root else name)
        return dataclasses.replace(self, **paths, **path_lists, datasets=datasets)


SETTING_KEYS = tuple(field.name for field in dataclasses.fields(TrainingSettings))


def read_config(path: str | Path) -> dict:
    """A training config (a shipped name or a JSON file) over the default config."""
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
    unknown = sorted(set(data) - set(SETTING_KEYS))
    if unknown:
        raise UserError(f"training config {path} has unknown keys {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(SETTING_KEYS))}")
    base = json.loads(DEFAULT_CONFIG.read_text())
    base.pop("about", None)
    base.update(data)
    return base


def settings_from_args(args) -> TrainingSettings:
    """A new run's settings: --config (default: the default config), then the flags given. A resumed
    run's: its train_config.json, where a setting added after the run began takes the default
    config's value (which leaves it off), and only RESUME_OVERRIDABLE flags may be given."""
    out = Path(args.out)
    overrides = {k: v for k, v in vars(args).items() if k in SETTING_KEYS and v is not None}
    if args.resume:
        if not (out / STATE_FILE).is_file() or not (out / SETTINGS_FILE).is_file():
            raise UserError(f"{out} holds no run to resume (no {STATE_FILE} / {SETTINGS_FILE})")
        fixed = sorted(set(overrides) - RESUME_OVERRIDABLE) + (["config"] if args.config else [])
        if fixed:
            raise UserError(f"--resume continues the run as configured in {out / SETTINGS_FILE}; "
                            f"drop --{fixed[0].replace('_', '-')}")
        settings = {**read_config(DEFAULT_CONFIG), **json.loads((out / SETTINGS_FILE).read_text())}
        settings.update(overrides)
        return TrainingSettings.from_dict(settings, str(out / SETTINGS_FILE))
    if (out / STATE_FILE).exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    settings = read_config(args.config) if args.config else read_config(DEFAULT_CONFIG)
    settings.update(overrides)
    return TrainingSettings.from_dict(settings, args.config or str(DEFAULT_CONFIG)).check().with_absolute_paths()
