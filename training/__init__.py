"""Training Gamma: the dataset registry and meta-info readers, the synthetic quality set,
the training program (`python -m training.train`) and evaluation (`python -m training.evaluate`).

See docs/training.md. Imports gamma_edge; nothing outside training/ imports this package.
"""
