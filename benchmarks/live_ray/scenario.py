"""What the live benchmark replays and deploys, derived from one pipeline file and one trace.

The pipeline file (`pipeline.yaml`) is written in the trace's own time. The benchmark replays
the trace `time_scale` times faster, so every time in the pipeline is divided by the time
scale and every rate multiplied by it ("wall" units): a 120 s cold start becomes 12 s, a
planner that serves 1 call/s serves 10. The rule is mechanical because every time in an
elastiscale config is named `*_s`: `wall_units` divides every such field (and the lists of
them, such as a forecaster's `horizons_s`) and multiplies `capacity_per_replica`.

Every live run and every simulated one uses the same wall-unit pipeline, the same arrivals
(the trace's requests thinned by `rate_scale` with a seeded draw, at uniformly random times
within their trace second) and the same initial replica counts. The first `warmup_s` of trace
is replayed and not scored, so that every policy starts with metrics to read (a rate needs a
window of data) and the comparison is not about the first seconds after a deploy.

Two shapes (`PIPELINES`): the chain (default), where deployments call each other through the
handles they hold (the file's `caller_waits` and `via` edges), and the star, where the ingress
makes every call. Two slices
of trace (`SLICES`): a smooth one and a bursty one; a seed is one thinning of a slice.
"""

from __future__ import annotations

import copy
import csv
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from elastiscale.backtest.baselines import initial_replicas
from elastiscale.config import Config, validate_mapping
from elastiscale.trace import Trace, load_trace

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

#: The pipeline file of each shape.
PIPELINES = {"chain": HERE / "pipeline_chain.yaml", "star": HERE / "pipeline.yaml"}
#: Room in Serve's `max_ongoing_requests` for a deployment's requests awaiting its own
#: downstream calls, as a multiple of its slots (a request past its hold keeps its Serve slot).
CALLER_HEADROOM = 4


@dataclass(frozen=True)
class Slice:
    """A stretch of trace and how much of it is replayed."""

    trace_path: Path
    start_s: float
    duration_s: float
    rate_scale: float


#: The smooth slice: the Azure conversation trace's 10 minutes from second 1,500 (around its
#: busiest minute, at 1,844 s), a fifth of its requests: 1.0 to 1.7 requests/s over a minute.
#: The bursty one: NASA's HTTP log (July 1995, from second 1,087,800 of the month: the 20
#: minutes copied into nasa_http_1995_07_burst_1s.csv), whose minute rate drops from 2.8 to
#: 0.2 requests/s and back to 3.5 within ten minutes; 0.45 of its requests: 0.1 to 1.6/s.
SLICES = {
    "smooth": Slice(REPO / "examples/traces/azure_llm_2023_conv_1s.csv", 1500.0, 600.0, 0.2),
    "bursty": Slice(HERE / "nasa_http_1995_07_burst_1s.csv", 180.0, 600.0, 0.45),
}

#: Ray Serve's documented autoscaling defaults (`ray.serve.config.AutoscalingConfig`, Ray
#: 2.60), in seconds of real time; the benchmark divides them by the time scale.
RAY_SERVE_DEFAULTS_S = {
    "upscale_delay_s": 30.0,
    "downscale_delay_s": 600.0,
    "look_back_period_s": 30.0,
    "metrics_interval_s": 10.0,
}
#: Ray Serve's own times that set how fast it reacts, as environment variables of Ray 2.60 with
#: their defaults, divided by the time scale like the rest: the autoscaling metric pushes of
#: replicas and handles (10 s each), and a handle's retry backoff when every replica it may
#: route to is full (25 ms doubling up to 0.5 s). Unscaled, a 0.5 s backoff against a 0.2 s
#: hold leaves slots idle while calls queue: the live system would behave as one whose router
#: waits 5 s between tries, which no deployment at real speed does.
RAY_SERVE_ENV_S = {
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": 10.0,
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": 10.0,
    "RAY_SERVE_ROUTER_RETRY_INITIAL_BACKOFF_S": 0.025,
    "RAY_SERVE_ROUTER_RETRY_MAX_BACKOFF_S": 0.5,
}

#: elastiscale's own time parameters, written out so that they are scaled with the rest (the
#: values are the policy's defaults; the forecaster's are `ForecasterParams`').
ELASTISCALE_PARAMS_S: dict[str, Any] = {
    "rate_window_s": 60.0,
    "fanout_half_life_s": 120.0,
    "forecaster_params": {
        "step_s": 30.0,
        "horizons_s": [60.0, 300.0, 900.0],
        "window_s": 86400.0,
        "calibration_s": 43200.0,
        "refit_every_s": 86400.0,
        "history_s": 604800.0,
    },
}
#: How long metrics take to reach a policy in trace time: a 10 s scrape and a 60 s rate window
#: (the simulator's `metrics_delay_s` and `rate_window_s`).
METRICS_DELAY_S = 15.0
RATE_WINDOW_S = 60.0
#: Missing-data staleness (the constraint chain's default), scaled like every other time.
STALENESS_S = 120.0


def wall_units(doc: Any, time_scale: float) -> Any:
    """A copy of a config mapping with every `*_s` value divided by `time_scale` and every
    `capacity_per_replica` multiplied by it."""
    if isinstance(doc, dict):
        out: dict[str, Any] = {}
        for key, value in doc.items():
            if key.endswith("_s") and value is not None:
                out[key] = (
                    [float(v) / time_scale for v in value]
                    if isinstance(value, list | tuple)
                    else float(value) / time_scale
                )
            elif key == "capacity_per_replica":
                out[key] = float(value) * time_scale
            else:
                out[key] = wall_units(value, time_scale)
        return out
    if isinstance(doc, list):
        return [wall_units(v, time_scale) for v in doc]
    return copy.deepcopy(doc)


def slots(capacity_rps: float, service_time_s: float) -> int:
    """Concurrent calls of one replica, as the simulator counts them (Little's law, rounded,
    at least 1): Ray Serve's `max_ongoing_requests`."""
    return max(1, round(capacity_rps * service_time_s))


@dataclass(frozen=True)
class Scenario:
    """One benchmark setting: the pipeline, the slice of trace and how it is replayed."""

    shape: str = "chain"
    trace_path: Path = SLICES["smooth"].trace_path
    start_s: float = SLICES["smooth"].start_s
    duration_s: float = SLICES["smooth"].duration_s
    warmup_s: float = 120.0  # replayed before `start_s`, scored for no run
    time_scale: float = 20.0
    rate_scale: float = SLICES["smooth"].rate_scale
    seed: int = 0
    slice_name: str = "smooth"

    @classmethod
    def of(cls, slice_name: str, **settings: Any) -> Scenario:
        """The scenario of one named slice (`SLICES`), with other settings as given."""
        sl = SLICES[slice_name]
        base = {
            "trace_path": sl.trace_path,
            "start_s": sl.start_s,
            "duration_s": sl.duration_s,
            "rate_scale": sl.rate_scale,
        }
        return cls(slice_name=slice_name, **{**base, **settings})

    @property
    def pipeline_path(self) -> Path:
        return PIPELINES[self.shape]

    # ---- the pipeline ------------------------------------------------------------------------

    def trace_doc(self) -> dict[str, Any]:
        """The pipeline file as written (trace time), with the staleness made explicit."""
        doc: dict[str, Any] = yaml.safe_load(self.pipeline_path.read_text(encoding="utf-8"))
        constraints = doc.setdefault("constraints", {})
        constraints.setdefault("missing_data", {}).setdefault("staleness_s", STALENESS_S)
        return doc

    def wall_doc(self) -> dict[str, Any]:
        """The pipeline in wall units, with every component's initial replica count set (a
        copy: callers add their own sections)."""
        return copy.deepcopy(self._wall_doc)

    @cached_property
    def _wall_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = wall_units(self.trace_doc(), self.time_scale)
        config = validate_mapping(doc)
        start = initial_replicas(config, self.replay(), window_s=300.0 / self.time_scale)
        for name, comp in doc["pipeline"]["components"].items():
            comp["replicas"]["initial"] = start[name]
        return doc

    @cached_property
    def wall_config(self) -> Config:
        return validate_mapping(self._wall_doc)

    # ---- the load ----------------------------------------------------------------------------

    @property
    def first_s(self) -> float:
        """The first trace second replayed: the warm-up's."""
        return self.start_s - self.warmup_s

    @property
    def warmup_wall_s(self) -> float:
        return self.warmup_s / self.time_scale

    def arrivals(self) -> np.ndarray:
        """Send times of the replayed requests (warm-up included), wall seconds from the
        start, ascending (a copy)."""
        return self._arrivals.copy()

    @cached_property
    def _arrivals(self) -> np.ndarray:
        trace = load_trace(self.trace_path)
        mask = (trace.t_s >= self.first_s) & (trace.t_s < self.start_s + self.duration_s)
        t_s, counts = trace.t_s[mask], trace.requests[mask]
        rng = np.random.default_rng(self.seed)
        kept = rng.binomial(np.rint(counts).astype(np.int64), self.rate_scale)
        starts = np.repeat(t_s - self.first_s, kept)
        times = (starts + rng.uniform(0.0, trace.bin_s, size=starts.size)) / self.time_scale
        return np.sort(times)

    def replay(self) -> Trace:
        """The arrivals as a trace of 1 s wall bins: what the simulator replays."""
        times = self._arrivals
        n_bins = math.ceil((self.warmup_s + self.duration_s) / self.time_scale)
        counts = np.bincount(np.minimum(times.astype(np.int64), n_bins - 1), minlength=n_bins)
        return Trace(
            name="live-replay",
            t_s=np.arange(n_bins, dtype=float),
            requests=counts.astype(float),
            bin_s=1.0,
        )

    def write_replay(self, path: Path) -> Path:
        trace = self.replay()
        with path.open("w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["t_seconds", "requests"])
            for t, n in zip(trace.t_s, trace.requests, strict=True):
                out.writerow([int(t), int(n)])
        return path

    # ---- what each run deploys ---------------------------------------------------------------

    def app_components(self, registry_dir: Path) -> dict[str, dict[str, Any]]:
        """`app.build`'s spec of every deployment, ingress first (edges handed over to another
        deployment, the file's `via`, carry it)."""
        doc = self.wall_doc()["pipeline"]
        comps = doc["components"]
        order = sorted(comps, key=lambda n: not comps[n].get("ingress", False))
        callers = {e["from"] for e in doc["edges"]} | {
            e["via"] for e in doc["edges"] if e.get("via")
        }
        spec: dict[str, dict[str, Any]] = {}
        for name in order:
            comp = comps[name]
            n_slots = slots(comp["capacity_per_replica"], comp["service_time_s"])
            edges = []
            for e in doc["edges"]:
                if e["from"] != name:
                    continue
                edge = {
                    "to": e["to"],
                    "fanout": e.get("fanout", 1.0),
                    "distribution": e.get("fanout_distribution", "fixed"),
                }
                if e.get("via"):
                    edge["via"] = e["via"]
                edges.append(edge)
            spec[name] = {
                "startup_s": comp.get("startup_s", 0.0),
                "hold_s": comp["service_time_s"],
                "slots": n_slots,
                "max_ongoing": n_slots * CALLER_HEADROOM if name in callers else n_slots,
                "edges": edges,
            }
        return {
            "components": spec,
            "registry_dir": str(registry_dir),
            "window_s": self.rate_window_s,
        }

    def ray_serve_autoscaling(self) -> dict[str, dict[str, Any]]:
        """Each deployment's `autoscaling_config` for the `ray-serve` run: Ray's defaults scaled
        in time, `target_ongoing_requests` at the pipeline's target utilization of the slots."""
        config = self.wall_config
        out: dict[str, dict[str, Any]] = {}
        for name, comp in config.pipeline.components.items():
            n_slots = slots(comp.capacity_per_replica, comp.service_time_s)
            out[name] = {
                "min_replicas": comp.replicas.min,
                "max_replicas": comp.replicas.max,
                "initial_replicas": comp.replicas.initial,
                "target_ongoing_requests": config.pipeline.utilization_target(name) * n_slots,
                **{k: v / self.time_scale for k, v in RAY_SERVE_DEFAULTS_S.items()},
            }
        return out

    def ray_serve_env(self) -> dict[str, str]:
        return {k: f"{v / self.time_scale:g}" for k, v in RAY_SERVE_ENV_S.items()}

    def ray_serve_policy_params(self) -> dict[str, Any]:
        """The simulator's `ray-serve` policy with the same scaled settings."""
        scaled = {k: v / self.time_scale for k, v in RAY_SERVE_DEFAULTS_S.items()}
        scaled.pop("metrics_interval_s")
        # Serve decides every 0.1 s; the simulator's metrics come in whole steps of the replay's
        # 1 s bins, so the policy ticks once per step.
        scaled["interval_s"] = 1.0
        return scaled

    def elastiscale_params(self) -> dict[str, Any]:
        params: dict[str, Any] = wall_units(ELASTISCALE_PARAMS_S, self.time_scale)
        return params

    @property
    def metrics_delay_s(self) -> float:
        return METRICS_DELAY_S / self.time_scale

    @property
    def rate_window_s(self) -> float:
        return RATE_WINDOW_S / self.time_scale
