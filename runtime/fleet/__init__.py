"""A fleet of cameras watched with one model (docs/fleet.md). A frame goes one way: reader
(runtime.live) -> feed (one camera: what its reader delivered, as records, quality events and
states) -> batcher (the frames of every camera scored in shared backend calls) -> feed (the
score) -> outputs. config reads which cameras and how (command line, YAML or TOML, every key
checked); runner starts and ends it all. It may import contract, runtime.inference, runtime.live,
runtime.watch and runtime.outputs; nothing below it calls back up."""
