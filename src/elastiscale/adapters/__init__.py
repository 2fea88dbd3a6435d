"""The outside world: metric sources that observe, actuators that act, and in-memory twins.

base.py          the `MetricSource` and `Actuator` protocols, `ActuationResult`, `Failure`
contract.py      what every actuator shares: options, target checks, retries, one change at a time
memory.py        in-memory twins (trace source, recording and dry-run actuators)
source_check.py  the metric source's answer checked against the pipeline at start-up
kubernetes/      the Kubernetes actuator (`/scale` subresources, Lease-aware calls)
prometheus/      the Prometheus metric source, its PromQL presets, history export and CLI
ray/             the Ray Serve actuator and the in-Serve application-level policy
sagemaker/       the SageMaker actuator (production variants, inference components)

Wire-level fakes of these platforms, for tests, are in `elastiscale.testing`.
"""
