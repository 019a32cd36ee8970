"""Watching one camera (docs/fleet.md, "Events" and "Baselines"): conditions (lost, covered,
frozen, degraded, with hysteresis in time), normal (a robust running normal of one quantity),
signals (cheap image signals, the evidence an alert names), baseline (a camera's own normal per
light condition, and the verdict of the latest frames against it), smoothing, camera
(CameraWatch: the events of one camera) and state_file (conditions and normals kept across
restarts). It imports only contract: a run of one source and a fleet both use it."""
