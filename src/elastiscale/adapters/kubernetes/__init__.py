"""Kubernetes: replica counts through the `/scale` subresource with the official client.

actuator.py     `KubernetesActuator` (the `kubernetes` actuator) and `connect`
options.py      its options and targets (`KubernetesOptions`, `KubernetesTarget`)
calls.py        one API call with its errors mapped onto `Failure`s
autoscalers.py  HPAs and KEDA ScaledObjects found on the same workload
pool_store.py   a shared GPU pool's state in a ConfigMap (`daemon.gpu_pools`)

The fake API server for tests is `elastiscale.testing.kubernetes.FakeKubeAPI`.

The official client is the optional extra `kubernetes`: `actuator.py` is imported on first use
of its names, so the rest of the package loads without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from elastiscale.adapters.kubernetes.actuator import KubernetesActuator, connect

__all__ = ["KubernetesActuator", "connect"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from elastiscale.adapters.kubernetes import actuator

        return getattr(actuator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
