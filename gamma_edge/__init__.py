"""gamma-edge: the Gamma image assessment model (CLIP + MoAE + scene prompts) and its CLI.

Importing this package is cheap; torch and open_clip load when a model is built.
"""
__version__ = "0.1.0"

__all__ = ["Gamma", "GammaConfig", "load_checkpoint", "save_checkpoint", "__version__"]


def __getattr__(name):
    if name in ("Gamma", "GammaConfig"):
        from gamma_edge import model
        return getattr(model, name)
    if name in ("load_checkpoint", "save_checkpoint"):
        from gamma_edge import checkpoint
        return getattr(checkpoint, name)
    raise AttributeError(name)
