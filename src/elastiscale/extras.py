"""Optional integrations and the one-line error naming the extra that installs them.

The base install runs the engine, the simulator and the sidecar against Prometheus; each heavier
integration is an extra (`pip install 'elastiscale[keda]'`). A feature that needs one calls
`require(module, extra, feature)` where it starts, so the user reads which extra to install
instead of a traceback from deep inside an import.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Final

from elastiscale.errors import ElastiscaleError

#: Extra name -> what it brings (pyproject.toml's [project.optional-dependencies] keys).
EXTRAS: Final = {
    "kubernetes": "the Kubernetes actuator, leader election and the Kubernetes autoscalers",
    "forecast": "statsmodels forecasters (Holt-Winters, ARIMA, STL)",
    "plots": "matplotlib plots in backtest and sweep reports",
    "ray": "the Ray Serve actuator and policy; `elastiscale sweep --ray`",
    "sagemaker": "the SageMaker actuator (boto3)",
    "keda": "the KEDA external scaler (`elastiscale run --keda-listen`)",
}


#: Top-level module -> the extra that installs it.
MODULE_EXTRAS: Final = {
    "kubernetes": "kubernetes",
    "statsmodels": "forecast",
    "matplotlib": "plots",
    "ray": "ray",
    "boto3": "sagemaker",
    "botocore": "sagemaker",
    "grpc": "keda",
}


def extra_for(exc: ModuleNotFoundError) -> str | None:
    """The extra that would have provided the module `exc` says is missing, if one does."""
    if exc.name is None:
        return None
    return MODULE_EXTRAS.get(exc.name.split(".")[0])


class MissingExtraError(ElastiscaleError):
    """A feature needs an optional dependency that is not installed."""

    def __init__(self, extra: str, feature: str, module: str) -> None:
        self.extra = extra
        self.module = module
        super().__init__(
            f"{feature} needs the optional extra {extra!r} (module {module!r} is not "
            f"installed): pip install 'elastiscale[{extra}]'"
        )


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import `module`, or raise `MissingExtraError` naming `extra` when it is not installed."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r} (extras: {', '.join(EXTRAS)})")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is not None and (exc.name == top or exc.name.startswith(top + ".")):
            raise MissingExtraError(extra, feature, module) from None
        raise
