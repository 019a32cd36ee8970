"""`gamma-edge baseline`: look at, and reset, the normals a watch keeps (docs/fleet.md, "Baselines")."""
from __future__ import annotations

import json
from pathlib import Path

import click

from contract.errors import UserError, user_errors


@click.group("baseline")
def baseline_command():
    """Each camera's own normal, kept in the baseline file of `gamma-edge run`.

    \b
      gamma-edge baseline show cameras.baselines.json
      gamma-edge baseline reset cameras.baselines.json gate dock
    """


@baseline_command.command("show")
@click.argument("file", type=click.Path(path_type=Path))
def show_command(file: Path):
    """Each camera's state, light condition and normal score."""
    with user_errors():
        cameras = _cameras(file)
        for name, saved in cameras.items():
            click.echo(f"{name}: {_describe(saved)}")


@baseline_command.command("reset")
@click.argument("file", type=click.Path(path_type=Path))
@click.argument("cameras", nargs=-1, required=True)
def reset_command(file: Path, cameras):
    """Learn these cameras' normals afresh (moved, or a lens replaced). A run holding the file takes
    the reset up at its next save (within 30 s); a run started later learns them from its warm-up."""
    from runtime.watch.state_file import request_reset

    with user_errors():
        for name in request_reset(file, list(cameras)):
            click.echo(f"{name}: its normal is learned afresh")


def _cameras(file: Path) -> dict:
    try:
        return json.loads(file.expanduser().read_text(encoding="utf-8"))["cameras"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"'{file}' is not a readable gamma-edge baseline file; check the path") from None


def _describe(saved: dict) -> str:
    if saved.get("reset"):
        return "reset asked for; learned afresh at the next start"
    state = ", ".join(saved.get("conditions") or []) or "ok"
    baseline = saved.get("baseline") or {}
    normals = []
    for light, quantities in (baseline.get("normals") or {}).items():
        score = quantities.get("score") or {}
        if score.get("level") is not None:
            normals.append(f"{light} {score['level']:.3f} +- {score['spread']:.3f}")
        else:
            normals.append(f"{light} learning")
    return f"{state}; normal score: {'; '.join(normals) or 'not learned yet'}"
