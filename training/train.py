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

This module is the command line; the settings are training/settings.py, the run
training/run.py, the recipe's pieces (model, optimizer, schedule, losses) training/recipe.py,
and what the run folder holds training/run_folder.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from contract.errors import UserError
from training.run import train
from training.run_folder import SETTINGS_FILE
from training.settings import PATCH_EMBEDDINGS, settings_from_args


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
    _add_model_options(parser.add_argument_group("model"))
    _add_data_options(parser.add_argument_group("data"))
    _add_optimisation_options(parser.add_argument_group("optimisation"))
    _add_evaluation_options(parser.add_argument_group("evaluation"))
    g = parser.add_argument_group("run")
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available; under torchrun cuda:LOCAL_RANK)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--stop-after-steps", type=int, help=argparse.SUPPRESS)   # tests: hard-exit like a kill
    return parser.parse_args(argv)


def _add_model_options(g) -> None:
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


def _add_data_options(g) -> None:
    g.add_argument("--datasets", nargs="+", metavar="NAME[:ROOT]", help="datasets to mix (registry names)")
    g.add_argument("--datasets-file", dest="datasets_files", action="append", help="a JSON file adding datasets")
    g.add_argument("--data-root", help="folder holding one folder per dataset (the registry's 'folder')")
    g.add_argument("--meta-info-dir", help="folder of meta-info CSV and split files (IQA-PyTorch's datasets/meta_info)")
    g.add_argument("--num-workers", type=int, help="image decoding workers per process")
    g.add_argument("--crop-size", type=int)
    g.add_argument("--no-hflip", dest="hflip", action="store_false", default=None, help="no random horizontal flip")


def _add_optimisation_options(g) -> None:
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


def _add_evaluation_options(g) -> None:
    g.add_argument("--eval-crops", nargs="+", help="crop protocols: random10 center five grid (the first selects best)")
    g.add_argument("--eval-every", type=int, help="evaluate every N epochs (0: never)")
    g.add_argument("--eval-before-training", action="store_true", default=None, help="also evaluate the initial model")
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--eval-max-long-side", type=int, help="shrink test images whose longer side exceeds this "
                                                         "(the runtime manifest's 512) before cropping")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
        out = Path(args.out)
        if int(os.environ.get("RANK", "0")) == 0:
            out.mkdir(parents=True, exist_ok=True)
            if not args.resume:
                (out / SETTINGS_FILE).write_text(json.dumps(settings.to_dict(), indent=2))
        train(settings, out, resume=args.resume, device=args.device, progress=not args.no_progress,
              stop_after_steps=args.stop_after_steps)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
