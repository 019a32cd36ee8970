"""Scenes and their SDP prompts (paper Sec. 3.4): data, not code.

A scene is a name and five prompts, one per level (bad, poor, fair, good,
perfect). The five shipped scenes live in scenes.json; a user adds a scene
with a JSON file of the same shape:

    {"scenes": {"xray": {"template": "x-ray {level}-quality image"}}}
    {"scenes": {"xray": {"prompts": ["...bad...", "...", "...", "...", "...perfect..."]}}}
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from contract.errors import UserError, read_user_json

SCENES_FILE = Path(__file__).parent / "scenes.json"
# The level words (bad .. perfect) and the plain variant's template are data in scenes.json too.
_SHIPPED = json.loads(SCENES_FILE.read_text())
LEVEL_WORDS = tuple(_SHIPPED["levels"])


def plain_prompts() -> list[str]:
    """The plain (non-SDP) variant's five prompts, the same for every scene."""
    return [_SHIPPED["plain_template"].format(level=word) for word in LEVEL_WORDS]


@dataclass(frozen=True)
class Scene:
    name: str
    prompts: tuple[str, ...]
    description: str = ""
    datasets: tuple[str, ...] = ()


def parse_scenes(data: dict, source: str) -> list[Scene]:
    """Scenes from the JSON shape above; `source` names the file in error messages."""
    entries = data.get("scenes") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise UserError(f"{source} has no 'scenes' object; see gamma_edge/scenes.json for the format")
    scenes = []
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise UserError(f"scene '{name}' in {source} must be an object with 'template' or 'prompts'")
        if "prompts" in entry:
            prompts = entry["prompts"]
        elif "template" in entry and "{level}" in str(entry["template"]):
            prompts = [str(entry["template"]).format(level=word) for word in LEVEL_WORDS]
        else:
            raise UserError(f"scene '{name}' in {source} needs 'prompts' (5 strings) "
                                 "or a 'template' containing {level}")
        if not (isinstance(prompts, list) and len(prompts) == 5 and all(isinstance(p, str) and p for p in prompts)):
            raise UserError(f"scene '{name}' in {source} must have exactly 5 non-empty prompts, "
                                 "bad to perfect")
        scenes.append(Scene(name, tuple(prompts), str(entry.get("description", "")),
                            tuple(entry.get("datasets", ()))))
    return scenes


def default_scenes() -> list[Scene]:
    return parse_scenes(_SHIPPED, "the shipped scenes.json")


def load_scene_file(path: str | Path) -> list[Scene]:
    return parse_scenes(read_user_json(path, "scene file"), str(path))


def merge_scenes(base: Iterable[Scene], extra: Iterable[Scene]) -> list[Scene]:
    """Scenes of `extra` are added after `base`; a same-named scene replaces the base one."""
    merged = {s.name: s for s in base}
    merged.update({s.name: s for s in extra})
    return list(merged.values())
