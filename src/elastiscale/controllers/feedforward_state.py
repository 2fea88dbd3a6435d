"""The parameters of `elastiscale` and the state it keeps per component (lead time, sizer,
scale-down window), built once at the component's first tick."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from elastiscale.controllers.base import TickContext
from elastiscale.controllers.calibration import CATALOGUE, DEFAULT_CANDIDATES
from elastiscale.controllers.constraints import WindowExtreme
from elastiscale.controllers.demand import ForecastParams
from elastiscale.controllers.fanout import RatioEstimator
from elastiscale.controllers.learned import Effective, LearningParams
from elastiscale.controllers.queueing import (
    QueueingSizer,
    Sizer,
    TokenSizerCache,
    UtilizationSizer,
    VariabilitySizers,
)
from elastiscale.controllers.slo_sizing import SLOSizer, objectives
from elastiscale.controllers.surge import QueueTrend
from elastiscale.decision import Detail
from elastiscale.pipeline_model import OracleParams

if TYPE_CHECKING:
    from elastiscale.config import ComponentConfig


class ElastiscaleParams(ForecastParams):
    """Parameters of `elastiscale`. Defaults follow from principles, not from any one trace."""

    burst_share: float = Field(
        OracleParams.model_fields["burst_share"].default,
        ge=0.0,
        lt=1.0,
        description="share of each component's queueing slack left to swings inside a window",
    )
    scale_down_delay_s: float | None = Field(
        None,
        ge=0,
        description="scale-down window; default: each component's startup + interval, at "
        "least cpu_scale_down_floor_s without GPUs and gpu_scale_down_floor_s with them",
    )
    cpu_scale_down_floor_s: float = Field(
        300.0,
        ge=0,
        description="the shortest default scale-down window of a component without GPUs (the "
        "HPA's default stabilization): its replicas cost no GPU-hours, and one released "
        "between bursts is back only after detection and start-up, queueing the chain below",
    )
    surge_hold_s: float = Field(
        0.0,
        ge=0,
        description="after a surge (surge.py), its component keeps what the window holds of it "
        "for at least this long (0: the ordinary window alone)",
    )
    gpu_scale_down_floor_s: float = Field(
        300.0,
        ge=0,
        description="the shortest default scale-down window of a component with GPUs (the "
        "HPA's default stabilization; 0: startup + interval alone): bursts recur within "
        "minutes, and a replica released between them is paid again with a start-up's misses",
    )
    fanout_half_life_s: float = Field(120.0, gt=0, description="memory of the fan-out estimate")
    fanout_prior_requests: float = Field(
        100.0, gt=0, description="the configured fan-out counts as this many upstream requests"
    )
    gpu_pool: str | None = Field(
        None, description="name of a GPU pool shared with other pipelines (size: max_gpus)"
    )
    feedforward: bool = Field(True, description="forecast ingress and propagate down the graph")
    measured_fanout: bool = Field(True, description="measure fan-out online (else: the priors)")
    gating: bool = Field(True, description="blend towards reactive where the forecast is poor")
    queueing: bool = Field(True, description="Erlang-C sizing (else: target utilization)")
    arrival_variability: Literal["poisson", "measured"] = Field(
        "poisson",
        description="the arrivals Erlang-C sizing assumes: Poisson, or as bursty as each "
        "component's own rate readings show (arrivals.py: the Allen-Cunneen factor)",
    )
    surge_floor: bool = Field(
        True,
        description="while a component's queue grows, floor it at the arrivals the growth "
        "shows plus the backlog expected when new replicas are ready (surge.py)",
    )
    surge_noise: Literal["poisson", "measured"] = Field(
        "measured",
        description="the change of a stable queue a surge must exceed: Poisson's, or as "
        "dispersed as the component's typical rate changes show (arrivals.py)",
    )
    surge_drain_share: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="a surge's backlog is drained over this share of the component's drain "
        "time (startup + queueing slack); the ordinary queue term keeps the whole",
    )
    surge_hold: Literal["all", "arrivals", "confirmed", "none"] = Field(
        "arrivals",
        description="what the scale-down window remembers of the surge floor: all of it, the "
        "arrivals it showed (not the backlog's drain), those arrivals once a second reading "
        "in a row shows the surge (one reading alone is a batch), or nothing (the ordinary "
        "floor)",
    )
    arrival_half_life_s: float = Field(
        3600.0, gt=0, description="memory of the measured arrival variability"
    )
    scale_down_lookback: Literal["need", "forecast", "observed"] = Field(
        "need",
        description="what the scale-down window holds: the whole need, the need without the "
        "burst reserve, or only what observed load needed",
    )
    self_calibration: bool = Field(
        True,
        description="replay the observed ingress under candidate settings and adopt the "
        "cheapest that meets slo.attainment_target (calibration.py)",
    )
    calibration_min_history_s: float = Field(
        4 * 3600.0, gt=0, description="observed ingress history before the first calibration"
    )
    calibration_every_s: float = Field(
        86400.0, gt=0, description="calibrations at most this far apart once history is long"
    )
    calibration_window_s: float = Field(
        12 * 3600.0, gt=0, description="how much of the observed history a calibration replays"
    )
    calibration_novelty_factor: float | None = Field(
        2.0,
        gt=1.0,
        description="ingress whose last hour averages more than this times the busiest hour "
        "of the history the setting was chosen on is novel: the safest candidate is in "
        "force until a calibration covers it (novelty.py); null: never",
    )
    burst_reserve: bool = Field(
        True,
        description="headroom over persistence sized to slo.attainment_target from the "
        "history's rises within each lead time (else: the quantile of its changes)",
    )
    burst_reserve_time_of_day: bool = Field(
        True,
        description="once the history spans two days, learn the burst reserve from the rises "
        "that started near the same time of day (bursts.py), else from all of them",
    )
    burst_reserve_cap: Literal["none", "reactive"] = Field(
        "none",
        description="cap what the burst reserve adds to a component's need at what reactive "
        "scaling (load / target utilization) would hold for the demand without it "
        "(cost_guard.py), or none",
    )
    calibration_candidates: tuple[str, ...] = Field(
        DEFAULT_CANDIDATES,
        min_length=1,
        description="the settings a calibration replays, safest first (calibration.CATALOGUE)",
    )
    calibration_reference: Literal["none", "hpa"] = Field(
        "none",
        description="a reactive policy replayed beside the candidates: where it misses more "
        "than twice what the target allows, half its misses is the goal (calibration.goal)",
    )
    calibration_warmup: Literal["half", "history"] = Field(
        "half",
        description="what warms a calibration's candidates up before the scored part of the "
        "replay: the first half of the replayed window, or all the history kept before it",
    )

    @field_validator("calibration_candidates")
    @classmethod
    def _known_candidates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in CATALOGUE]
        if unknown:
            raise ValueError(f"unknown candidate {unknown[0]!r} (known: {', '.join(CATALOGUE)})")
        return value

    learn: bool = Field(
        False,
        description="plan with start-up, capacity and service time measured online "
        "(controllers/learned.py; the file's values are the priors)",
    )
    learning: LearningParams = Field(
        default_factory=LearningParams, description="how the online estimates are made"
    )


@dataclass(slots=True)
class ComponentState:
    """What the policy keeps about one component."""

    name: str
    lead_s: float
    drain_s: float  # a backlog is cleared over this long: startup + queueing slack
    sizer: Sizer | None  # None for token-sized components (sized per call size)
    token_sizers: TokenSizerCache | None
    down: WindowExtreme
    #: Its Erlang-C sizers per arrival variability (request-sized, no TTFT/ITL objectives).
    by_variability: VariabilitySizers | None = None
    tokens_per_request: RatioEstimator | None = None
    token_factor: RatioEstimator | None = None
    seeded: bool = False
    details: dict[str, Detail] = field(default_factory=dict)
    startup_s: float = 0.0  # the start-up planned with (the measured one with `learn`)
    slack_s: float = 0.0  # its queueing slack: budget less service time (drain_s - startup_s)
    queue_trend: QueueTrend = field(default_factory=QueueTrend)
    #: This tick's arrivals in a surge (surge.py), its own or carried from above; else None.
    surge_rps: float | None = None
    #: How many readings in a row showed a surge of its own queue (0: this one did not).
    surge_streak: int = 0
    #: What the window held at the ticks of a surge, kept `surge_hold_s` (None: not kept).
    surge_down: WindowExtreme | None = None


def build_component(
    ctx: TickContext,
    name: str,
    params: ElastiscaleParams,
    budget_s: float,
    learned: Effective | None = None,
) -> ComponentState:
    """The state `elastiscale` keeps about component `name`: its lead time (start-up, interval,
    actuation delay and the service times on the slowest path to it), backlog drain time,
    sizer and scale-down window; with `learned`, its start-up, capacity and service time are
    the measured ones in use instead of the file's."""
    comp = ctx.pipeline.components[name]
    if learned is not None:
        comp = comp.model_copy(
            update={
                "startup_s": learned.startup_s,
                "capacity_per_replica": learned.capacity_per_replica,
                "service_time_s": learned.service_time_s,
            }
        )
    p = params
    slack_s = max(budget_s - comp.service_time_s, comp.service_time_s)
    path_s = max(
        sum(ctx.pipeline.components[u].service_time_s for u in path[:-1])
        for path in ctx.pipeline.paths_from_ingress(name)
    )
    lead_s = ctx.lead_time_s(name) + path_s
    if learned is not None:
        lead_s += comp.startup_s - ctx.pipeline.components[name].startup_s
    delay_s = p.scale_down_delay_s
    if delay_s is None:
        delay_s = comp.startup_s + ctx.interval_s
        if comp.gpus_per_replica == 0:
            delay_s = max(delay_s, p.cpu_scale_down_floor_s)
        else:
            delay_s = max(delay_s, p.gpu_scale_down_floor_s)
    utilization = ctx.config.pipeline.utilization_target(name)
    sizer: Sizer | None = None
    tokens: TokenSizerCache | None = None
    by_variability: VariabilitySizers | None = None
    slo_sizers = _slo_factory(comp, params, budget_s) if p.queueing else None
    if comp.capacity_unit == "requests":
        if slo_sizers is not None:
            sizer = slo_sizers(1.0)
        elif p.queueing:
            sizer = QueueingSizer(
                capacity_rps=comp.capacity_per_replica,
                service_time_s=comp.service_time_s,
                budget_s=budget_s,
                max_replicas=comp.replicas.max,
                burst_share=p.burst_share,
            )
            if p.arrival_variability == "measured":
                by_variability = VariabilitySizers(sizer, p.burst_share)
        else:
            sizer = UtilizationSizer(
                capacity_rps=comp.capacity_per_replica,
                utilization=utilization,
                max_replicas=comp.replicas.max,
            )
    else:
        tokens = TokenSizerCache(
            capacity_tokens_per_s=comp.capacity_per_replica,
            service_time_s=comp.service_time_s,
            budget_s=budget_s,
            max_replicas=comp.replicas.max,
            burst_share=p.burst_share,
            queueing=p.queueing,
            utilization=utilization,
            factory=slo_sizers,
        )
    made = ComponentState(
        name=name,
        lead_s=lead_s,
        drain_s=comp.startup_s + slack_s,
        sizer=sizer,
        token_sizers=tokens,
        down=WindowExtreme(delay_s, lowest=False),
        surge_down=WindowExtreme(p.surge_hold_s, lowest=False) if p.surge_hold_s > 0 else None,
        by_variability=by_variability,
        startup_s=comp.startup_s,
        slack_s=slack_s,
    )
    if tokens is not None:
        half_life_s = p.fanout_half_life_s
        made.tokens_per_request = RatioEstimator(None, 0.0, half_life_s)
        made.token_factor = RatioEstimator(1.0, p.fanout_prior_requests, half_life_s)
    return made


def _slo_factory(
    comp: ComponentConfig, params: ElastiscaleParams, budget_s: float
) -> Callable[[float], Sizer] | None:
    """For a component with TTFT/ITL objectives, the sizer per call size (slo_sizing.py)."""
    if comp.slo is None:
        return None

    def make(tokens_per_request: float) -> Sizer:
        size = tokens_per_request if comp.capacity_unit != "requests" else 1.0
        return SLOSizer(
            objectives=objectives(comp, budget_s, size),
            capacity_rps=comp.capacity_per_replica / size,
            service_time_s=comp.service_time_s,
            max_replicas=comp.replicas.max,
            burst_share=params.burst_share,
        )

    return make


def replan(
    ctx: TickContext,
    name: str,
    params: ElastiscaleParams,
    budget_s: float,
    known: ComponentState | None,
    used: dict[str, Effective],
    effective: Effective,
) -> ComponentState:
    """The component's state planned with the learned numbers `effective`: `known` while
    they are within `learning.min_change` of those it was built with (`used[name]`), else
    rebuilt, its scale-down window and token estimators carried over."""
    last = used.get(name)
    if (
        known is not None
        and last is not None
        and not effective.differs(last, params.learning.min_change)
    ):
        return known
    made = build_component(ctx, name, params, budget_s, effective)
    if known is not None:
        known.down.window_s = made.down.window_s
        made.down = known.down
        made.surge_down = known.surge_down
        made.seeded = known.seeded
        made.tokens_per_request = known.tokens_per_request
        made.token_factor = known.token_factor
        made.queue_trend = known.queue_trend
    used[name] = effective
    return made
