"""`gamma-edge scenes`: the scenes (SDP prompt sets) gamma-edge, a checkpoint or an exported model knows."""
from __future__ import annotations

import click

from gamma_edge.scenes import default_scenes, load_scene_file, merge_scenes


@click.command("scenes")
@click.option("--model", "-m", type=click.Path(), help="List the scenes an exported model scores (its folder or "
                                                         ".onnx / .xml file; torch-free).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="List the scenes stored in this checkpoint.")
@click.option("--scenes-file", "scene_files", multiple=True, type=click.Path(dir_okay=False),
              help="A JSON file adding scenes (see gamma_edge/scenes.json for the format).")
def scenes_command(model, checkpoint, scene_files):
    """List the scenes (SDP prompt sets) and their five prompts.

    \b
    Without options: the scenes gamma-edge knows (gamma_edge/scenes.json), which a
    checkpoint can be exported with. An exported model scores only the scenes it
    was exported with: see them with --model.
    \b
      gamma-edge scenes
      gamma-edge scenes --model exports/natural
      gamma-edge scenes --checkpoint gamma.safetensors --scenes-file my_scenes.json
    """
    from contract.errors import user_errors

    if model:
        _echo_model_scenes(model)
        return
    with user_errors():
        if checkpoint:
            from gamma_edge.checkpoint import read_checkpoint_header
            scenes = read_checkpoint_header(checkpoint)["scenes"]
        else:
            scenes = default_scenes()
            click.echo("Scenes gamma-edge knows (an exported model scores only its own: gamma-edge scenes --model DIR)")
        for f in scene_files:
            scenes = merge_scenes(scenes, load_scene_file(f))
        for scene in scenes:
            click.echo(f"{scene.name}")
            for prompt in scene.prompts:
                click.echo(f"    {prompt}")


def _echo_model_scenes(model) -> None:
    """The scenes of an exported model, from its manifest (no torch needed)."""
    from contract.errors import UserError
    from contract.manifest import load_manifest

    try:
        manifest = load_manifest(model)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Scenes of {manifest.folder} ({len(manifest.scenes)}):")
    for scene in manifest.raw["scenes"]:
        click.echo(scene["name"])
        for prompt in scene.get("prompts", []):
            click.echo(f"    {prompt}")
