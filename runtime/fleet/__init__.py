"""A fleet of cameras watched with one model (docs/fleet.md): config reads which cameras and how
(command line, YAML or TOML, every key checked); runner reads every camera in its own thread and
scores the ready frames of all of them in shared batches; watch turns one camera's scores and
reader signals into quality events with hysteresis. It may import contract, runtime.live (whose
readers it reuses; the Scorer it is handed comes from runtime.inference) and runtime.outputs, which
carries the events away; nothing below it calls back up."""
