"""Training: the typed run config, `fit(cfg) -> FitResult`, MLflow tracking/registry, the Ray Train path.

`training.fit` imports only light modules at its top, so `import training.cli` (the `attnlab`
command tree) does not load torch.
"""

from training.fit import FitResult, fit

__all__ = ["fit", "FitResult"]
