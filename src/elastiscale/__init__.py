"""elastiscale: an autoscaling control plane for compound AI pipelines.

Forecast ingress demand, carry it down the pipeline's dependency graph through measured fan-out
factors, and start each component early enough to cover its own startup time.

    config = elastiscale.load_config("pipeline.yaml")
    engine = elastiscale.Engine(config, metrics=source, actuator=actuator)
    records = engine.step(now_s=clock.now_s())
"""

from elastiscale.adapters.base import ActuationResult, Actuator, Failure, MetricSource
from elastiscale.adapters.memory import DryRunActuator, RecordingActuator, SeriesMetricSource
from elastiscale.backtest.api import backtest_entry as backtest
from elastiscale.backtest.report import BacktestReport
from elastiscale.clock import Clock, FakeClock, SystemClock
from elastiscale.config import Config, load_config
from elastiscale.controllers.base import PerComponentPolicy, Policy, TickContext
from elastiscale.decision import Clamp, DecisionRecord, Proposal
from elastiscale.engine import Engine
from elastiscale.errors import (
    ConfigError,
    ElastiscaleError,
    MetricSourceError,
    RegistryError,
    TraceError,
)
from elastiscale.observations import Observation, ReplicaState
from elastiscale.pipeline import Pipeline
from elastiscale.trace import Trace, load_trace

__version__ = "0.1.0"

__all__ = [
    "ActuationResult",
    "Actuator",
    "BacktestReport",
    "Clamp",
    "Clock",
    "Config",
    "ConfigError",
    "DecisionRecord",
    "DryRunActuator",
    "ElastiscaleError",
    "Engine",
    "Failure",
    "FakeClock",
    "MetricSource",
    "MetricSourceError",
    "Observation",
    "PerComponentPolicy",
    "Pipeline",
    "Policy",
    "Proposal",
    "RecordingActuator",
    "RegistryError",
    "ReplicaState",
    "SeriesMetricSource",
    "SystemClock",
    "TickContext",
    "Trace",
    "TraceError",
    "__version__",
    "backtest",
    "load_config",
    "load_trace",
]
