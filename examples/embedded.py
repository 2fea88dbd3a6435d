"""elastiscale inside your own control loop.

The engine decides; your code supplies the metrics, applies the counts and owns the clock. Here
the metrics are the bundled trace carried through the pipeline's fan-outs (in production: a
Prometheus source), the platform is an in-memory actuator (in production: Kubernetes, Ray
Serve or SageMaker), and time is a fake clock stepped by the control interval.

    python examples/embedded.py
"""

from __future__ import annotations

from pathlib import Path

import elastiscale
from elastiscale import Engine, FakeClock, RecordingActuator, SeriesMetricSource

HERE = Path(__file__).resolve().parent

config = elastiscale.load_config(HERE / "pipelines" / "agent.yaml")
pipeline = elastiscale.Pipeline(config.pipeline)
trace = elastiscale.load_trace(HERE / "traces" / "azure_llm_2023_conv_1s.csv").scaled(rate_scale=4)

metrics = SeriesMetricSource.from_trace(trace, pipeline, window_s=60)  # your Prometheus here
actuator = RecordingActuator.for_config(config)  # your platform here
engine = Engine(config, metrics=metrics, actuator=actuator)

clock = FakeClock(start_s=trace.start_s)
changes = 0
while clock.now_s() < trace.end_s:
    clock.advance(config.control.interval_s)
    for record in engine.step(clock.now_s()):
        if record.changed:
            changes += 1
            print(
                f"{record.at_s:7.0f}s {record.component}: "
                f"{record.current_replicas} -> {record.desired_replicas} ({record.outcome})"
            )

print(f"{changes} changes; final replicas: {actuator.replicas}")
