"""Test doubles for users' own tests: wire-level fakes of the platforms elastiscale drives.

Each is a real server on 127.0.0.1 speaking the platform's paths and JSON, so the code under test
uses its real client (the `kubernetes` client, boto3, HTTP), the way httpx's `MockTransport` or
botocore's `Stubber` stand in for a service. The HTTP fakes inject faults and record every
request.

kubernetes.py        `FakeKubeAPI`: workloads and their `/scale`, custom resources, HPAs and
                     KEDA ScaledObjects, Leases, ConfigMaps (`kubernetes_store.py` holds its
                     objects)
ray_serve.py         `FakeServeDashboard`: the Ray dashboard's Serve REST API
sagemaker.py         `FakeSageMaker`: the SageMaker and Application Auto Scaling calls
prometheus.py        `LocalPrometheus`: a throwaway real Prometheus (needs the `prometheus`
                     binary), and `MetricsEndpoint` for it to scrape
server.py            what the HTTP fakes share: `LocalServer`, `QuietHandler`, `FakeServer`
lifetime.py          `die_with_parent`: a child server (Prometheus, moto, a daemon under test)
                     killed by the kernel when the process that started it dies untidily

Each is importable from `elastiscale.testing` itself. For in-memory twins of a metric source or
an actuator, see `elastiscale.adapters.memory`.
"""

from elastiscale.testing.kubernetes import FakeKubeAPI
from elastiscale.testing.prometheus import LocalPrometheus, MetricsEndpoint
from elastiscale.testing.ray_serve import FakeServeDashboard
from elastiscale.testing.sagemaker import FakeSageMaker

__all__ = [
    "FakeKubeAPI",
    "FakeSageMaker",
    "FakeServeDashboard",
    "LocalPrometheus",
    "MetricsEndpoint",
]
