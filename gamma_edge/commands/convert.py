"""`gamma-edge convert`: import an official Gamma release file into a gamma-edge checkpoint."""
from __future__ import annotations

from pathlib import Path

import click

from contract.errors import UserError, user_errors
from gamma_edge.convert import convert_official


@click.command("convert")
@click.argument("official", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the gamma-edge checkpoint (.safetensors).")
@click.option("--prompts", type=click.Choice(["sdp", "plain"]), default="sdp", show_default=True,
              help="Which release this is: 'sdp' for the Gamma-Prompt (scene prompts) weight, "
                   "'plain' for gamma_weight.pth ('{level} image' for every scene).")
@click.option("--config", "config_name", default=None,
              help="Model configuration name or JSON, when it cannot be inferred from the weights.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def convert_command(official, out, prompts, config_name, overwrite):
    """Import an official Gamma release file (OFFICIAL.pth) into a gamma-edge checkpoint.

    \b
    Example:
      gamma-edge convert gamma_weight.pth --prompts plain --out gamma-plain.safetensors
      gamma-edge convert gamma_prompt.pth --prompts sdp --out gamma.safetensors

    The authors' weights are licensed CC BY-NC-SA 4.0 (non-commercial use); the
    converted checkpoint carries the same licence.
    """
    from gamma_edge.checkpoint import file_sha256, save_checkpoint
    from gamma_edge.model import GammaConfig

    with user_errors():
        out_path = Path(out)
        if out_path.exists() and not overwrite:
            raise UserError(f"{out_path} already exists; pass --overwrite to replace it")
        config = GammaConfig.from_name(config_name) if config_name else None
        model = convert_official(official, prompts=prompts, config=config)
        save_checkpoint(model, out_path, extra={"source": Path(official).name, "licence": "CC BY-NC-SA 4.0",
                                                "converted_from": "zht8506/Gamma official release"})
    n_params = sum(p.numel() for p in model.parameters())
    click.echo(f"converted {official} -> {out_path}")
    click.echo(f"  backbone {model.config.backbone_name}, MoAE in the last {model.config.moae_blocks} blocks "
               f"x {model.config.num_experts} experts, {n_params / 1e6:.1f}M parameters, prompts={prompts}")
    click.echo(f"  scenes: {', '.join(model.scenes)}; sha256 {file_sha256(out_path)[:16]}")
    click.echo("  licence of the weights: CC BY-NC-SA 4.0 (non-commercial)")
    click.echo("next:")
    click.echo(f"  gamma-edge export --checkpoint {out_path} --scene natural --out gamma-natural")
    click.echo("  gamma-edge score photos/ --model gamma-natural")
