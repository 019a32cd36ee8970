"""The runtime's click commands, one module each: score (with ray, its `--engine ray` branch),
run, benchmark, info and demo; options holds the option groups and settings objects they share.
A command parses its options, calls the library in the other wings and ends a UserError as a
one-line CLI error (contract.errors.user_errors). Commands may import every runtime wing and
contract, never torch, gamma_edge, export or training; library code never imports this package
(the `gamma-edge` CLI in gamma_edge/cli.py loads each command only when it is invoked)."""
