"""What one config builds for the run loop: the metric source and actuator named in its
`metrics:` and `actuator:` sections, wrapped (see `guards`), and the `Engine` over them.

Build failures come in two kinds:
- the config cannot work (`ConfigError`, `RegistryError`, a bad trace file...): `elastiscale
  run` exits 2 at start, and a reload is refused;
- the platform cannot be reached right now (`TRANSIENT`: an API server down at start): the loop
  retries with backoff and `/readyz` says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from elastiscale import registry
from elastiscale.adapters.base import Actuator, MetricSource
from elastiscale.adapters.memory import DryRunActuator, RecordingActuator
from elastiscale.config import Config
from elastiscale.config.fleet_pools import pools_of
from elastiscale.controllers import pool_roster
from elastiscale.controllers.budget import use_pools
from elastiscale.daemon.guards import ErrorSink, GuardedSource, JournaledActuator, close_adapter
from elastiscale.daemon.journal import Journal
from elastiscale.engine import Engine
from elastiscale.errors import ActuatorError, ConfigError, MetricSourceError
from elastiscale.keda.actuator import KedaActuator
from elastiscale.keda.board import DesiredReplicas

log = logging.getLogger(__name__)

#: Exceptions of a build that may succeed on a later try.
TRANSIENT: Final = (ActuatorError, MetricSourceError, OSError)


@dataclass
class Runtime:
    """The engine of one config and the adapters it drives."""

    config: Config
    engine: Engine
    source: GuardedSource
    actuator: JournaledActuator
    _closers: list[Any] = field(default_factory=list)

    def warm_start(self, now_s: float) -> int:
        """Hand the policies that learn (those with a `warm_start`) the metric history the
        source already holds: the last `control.history_s` before `now_s`, one step per control
        interval, read as the source's `history` (Prometheus: chunked range queries). Returns
        the steps read (0 when no policy learns or the source keeps no history). A source that
        cannot answer is logged and skipped: the policies then start from nothing, as before."""
        learners: list[tuple[str, Callable[[Any], None]]] = []
        for policy in self.engine.policies:
            fn = getattr(policy, "warm_start", None)
            if callable(fn):
                learners.append((policy.name, fn))
        history = getattr(self.source.inner, "history", None)
        if not learners or not callable(history):
            return 0
        control = self.config.control
        components = list(self.engine.pipeline.order)
        try:
            steps = history(components, now_s - control.history_s, now_s, control.interval_s)
        except Exception as exc:  # the daemon must start even when the history cannot be read
            log.warning("warm start skipped: the metric history could not be read: %s", exc)
            return 0
        for _, warm_start in learners:
            warm_start(steps)
        names = ", ".join(name for name, _ in learners)
        log.info("warm start: %d steps of metric history given to %s", len(steps), names)
        return len(steps)

    def close(self) -> None:
        for adapter in self._closers:
            close_adapter(adapter)
        self._closers.clear()
        for policy in self.engine.policies:
            close_adapter(policy)  # a policy's `close()`, if any (e.g. its refit worker)


def install_gpu_pools(config: Config, dry_run: bool) -> None:
    """Where this process's shared GPU pools keep their state (`daemon.gpu_pools`). A dry run
    keeps them in memory, so it takes no GPUs from the daemons that act (a standby replica
    reads the shared pool without writing: `TickContext.acting`)."""
    settings = config.daemon.gpu_pools
    if settings.store == "kubernetes" and not dry_run:
        from elastiscale.adapters.kubernetes.pool_store import pool_factory

        use_pools(pool_factory(config), key=("kubernetes", settings))
    else:
        use_pools(None, key="in-process")


def declare_gpu_pools(configs: Iterable[Config]) -> None:
    """Declare the members of the shared GPU pools `configs` (every unit this daemon may run)
    draw from, so each pool reserves their minimums before they tick
    (`controllers/pool_roster.py`)."""
    pool_roster.declare(configs)


def check_runnable(config: Config, dry_run: bool, keda: bool = False) -> list[str]:
    """Problems that keep `config` from running as a daemon (it validated as a file). In KEDA
    mode (`keda`) KEDA acts, so an `actuator:` is optional (read only when given)."""
    problems = []
    if config.metrics is None:
        problems.append(
            "metrics: required by `elastiscale run` (e.g. {type: prometheus, url: ...} or "
            "{type: trace, path: ..., loop: true})"
        )
    if config.actuator is None and not dry_run and not keda:
        problems.append("actuator: required by `elastiscale run` (or pass --dry-run)")
    pools = pools_of(config)
    if pools and len(config.policies) > 1:
        # The engine combines every policy's proposal (control.combine); only the pool's
        # policy is held to its grant, so another's could take GPUs the pool gave others.
        names = ", ".join(p.name for p in config.policies)
        problems.append(
            f"policies: {names} would be combined, and only the policy drawing from GPU pool "
            f"{pools[0]} is held to its grant: run that policy alone (the others are for "
            "backtests)"
        )
    return problems


def build_runtime(
    config: Config,
    *,
    dry_run: bool,
    journal: Journal | None,
    on_error: ErrorSink,
    build: Callable[[str, str, Config, dict[str, Any]], Any] = registry.build,
    keda_board: DesiredReplicas | None = None,
) -> Runtime:
    """Build the adapters of `config` and an engine over them. With `dry_run` the actuator
    only reads (`DryRunActuator`) and the engine decides without acting; without an
    `actuator:` section a dry run starts from each component's initial (else min) count.
    With `keda_board` (KEDA mode) the actuator publishes to it (`KedaActuator`) and the
    configured one, if any, is only read."""
    problems = check_runnable(config, dry_run, keda=keda_board is not None)
    if problems:
        raise ConfigError(problems)
    install_gpu_pools(config, dry_run)
    assert config.metrics is not None
    closers: list[Any] = []
    try:
        raw_source: MetricSource = build(
            "metric_source", config.metrics.type, config, config.metrics.options()
        )
        closers.append(raw_source)
        raw_actuator: Actuator | None = None
        if config.actuator is not None:
            raw_actuator = build(
                "actuator", config.actuator.type, config, config.actuator.options()
            )
            closers.append(raw_actuator)
        actuator: Actuator
        if dry_run:
            start = None if raw_actuator else RecordingActuator.for_config(config).replicas
            actuator = DryRunActuator(inner=raw_actuator, initial=start)
        elif keda_board is not None:
            start = RecordingActuator.for_config(config).replicas
            actuator = KedaActuator(keda_board, raw_actuator, start)
        else:
            assert raw_actuator is not None
            actuator = raw_actuator
        source = GuardedSource(
            raw_source, config.control.interval_s, config.daemon.metrics_backoff_max_s, on_error
        )
        journaled = JournaledActuator(actuator, journal, on_error)
        engine = Engine(config, metrics=source, actuator=journaled, dry_run=dry_run)
    except BaseException:
        for adapter in closers:
            close_adapter(adapter)
        raise
    return Runtime(config, engine, source, journaled, closers)
