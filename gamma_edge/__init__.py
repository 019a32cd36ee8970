"""gamma-edge: the Gamma image assessment model (CLIP + MoAE + scene prompts) and its CLI.

Owns the model (model.py: config, MoAE, head, Gamma), create_model, the one factory
(factory.py), scenes as data (scenes.json), the pickle-free checkpoint format and the
official-weight import (checkpoint.py, convert.py), the demo model's checkpoint (assets/demo),
and the `gamma-edge` command line, whose commands live in the package that owns their work
(this package's in commands/).

Importing this package is cheap; torch and open_clip load when a model is built.
"""
__version__ = "0.1.0"

__all__ = ["Gamma", "GammaConfig", "create_model", "load_checkpoint", "save_checkpoint", "__version__"]


def __getattr__(name):
    if name in ("Gamma", "GammaConfig"):
        from gamma_edge import model
        return getattr(model, name)
    if name == "create_model":
        from gamma_edge import factory
        return factory.create_model
    if name in ("load_checkpoint", "save_checkpoint"):
        from gamma_edge import checkpoint
        return getattr(checkpoint, name)
    raise AttributeError(name)
