"""Kubernetes: replica counts through the `/scale` subresource with the official client.

actuator.py     `KubernetesActuator` (the `kubernetes` actuator) and `connect`
options.py      its options and targets (`KubernetesOptions`, `KubernetesTarget`)
calls.py        one API call with its errors mapped onto `Failure`s
autoscalers.py  HPAs and KEDA ScaledObjects found on the same workload

The fake API server for tests is `elastiscale.testing.kubernetes.FakeKubeAPI`.
"""

from elastiscale.adapters.kubernetes.actuator import KubernetesActuator, connect

__all__ = ["KubernetesActuator", "connect"]
