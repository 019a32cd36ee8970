"""`gamma-edge demo`'s library: tour runs the whole chain on the embedded demo model (held-out
ranking, parity between engines and precisions, a live clip, the model card check); heldout
degrades the held-out photos independently of the training code and sets the bar a kind must
clear before the card may claim it; media makes the demo clip and plots its scores; the card and
photos are in assets/. It may import contract, runtime.inference, runtime.live and runtime.shipped,
never runtime.commands (the command in runtime/commands/demo.py calls tour)."""
