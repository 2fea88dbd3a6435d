"""The configuration file: its models, and loading it with every problem named.

models.py   the pydantic models of a file (`Config` and its sections)
daemon.py   the `daemon:` section (`DaemonConfig`): serving, journal, logs, leader election
loading.py  `load_config` and `validate_mapping`: YAML read, models, graph and plugin checks
fleet.py    `load_fleet`: a fleet file of pipelines, merged into units where they share
            components (fleet_graph.py, fleet_plugins.py, fleet_merge.py)

Everything is importable from `elastiscale.config` itself.
"""

from elastiscale.config.daemon import DaemonConfig, LeaderElectionConfig
from elastiscale.config.loading import find_cycle, graph_problems, load_config, validate_mapping
from elastiscale.config.models import (
    CapacityUnit,
    ComponentConfig,
    Config,
    ConstraintsConfig,
    ControlConfig,
    EdgeConfig,
    Fraction,
    MemberSpec,
    MissingDataRules,
    PipelineSpec,
    PluginSpec,
    PolicySpec,
    RateLimit,
    ReplicaBounds,
    ScalingRules,
    ScheduledBounds,
    SLOConfig,
    StrictModel,
)

__all__ = [
    "CapacityUnit",
    "ComponentConfig",
    "Config",
    "ConstraintsConfig",
    "ControlConfig",
    "DaemonConfig",
    "EdgeConfig",
    "Fraction",
    "LeaderElectionConfig",
    "MemberSpec",
    "MissingDataRules",
    "PipelineSpec",
    "PluginSpec",
    "PolicySpec",
    "RateLimit",
    "ReplicaBounds",
    "SLOConfig",
    "ScalingRules",
    "ScheduledBounds",
    "StrictModel",
    "find_cycle",
    "graph_problems",
    "load_config",
    "validate_mapping",
]
