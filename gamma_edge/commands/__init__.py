"""The `gamma-edge` commands this package owns (scenes, convert), each in its own module.

Library code (gamma_edge.scenes, gamma_edge.convert, ...) never imports these: the CLI
imports them only when a command is invoked (gamma_edge/cli.py).
"""
