"""The stored reference of the simulators' results, and how to compute it.

`tests/data/sim_reference.json` holds what the simulators produced before they were made
faster; `test_sim_reference.py` recomputes every case and requires the same bits. Two kinds of
case:

- `backtests`: whole backtests (`elastiscale.backtest`) of policies whose code the speed work
  touches (the reactive ones, `predictive`, `static-peak`): each policy's score and a digest of
  every array of its `SimulationResult`.
- `replays`: the scaling commands that `elastiscale` and `oracle` issued, stored once and
  replayed into a bare simulator at the same ticks, with a digest of every metric observation
  the engine would have read and of the result. This pins the simulators and the simulated
  metric source independently of those policies' own code, which changes for other reasons.

Regenerate (only when a change of results is intended, and say why in the commit):

    PYTHONPATH=src python tests/sim_reference.py --write [--keep-commands]

(`--keep-commands` recomputes what the stored commands lead to, when only the simulators
changed.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

import elastiscale
from elastiscale.backtest import api, baselines, runner
from elastiscale.backtest.model import SimulationResult
from elastiscale.backtest.simmetrics import SimulatedMetricSource
from elastiscale.clock import FakeClock
from elastiscale.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "sim_reference.json"
AGENT = ROOT / "examples" / "pipelines" / "agent.yaml"
RAG = ROOT / "examples" / "pipelines" / "rag.yaml"
AZURE = ROOT / "examples" / "traces" / "azure_llm_2023_conv_1s.csv"
MOONCAKE = ROOT / "examples" / "traces" / "mooncake_fast25_conversation_1s.csv"

#: name -> (pipeline, trace, backtest keyword arguments, policies)
BACKTESTS: dict[str, tuple[Path, Path, dict[str, Any], list[str]]] = {
    "agent-azure-fast": (
        AGENT,
        AZURE,
        {"rate_scale": 4.0, "end_s": 1800.0, "warmup_s": 300.0},
        ["static-peak", "hpa", "kpa", "step-scaling", "target-tracking", "predictive"],
    ),
    "rag-mooncake-fast": (
        RAG,
        MOONCAKE,
        {"end_s": 1800.0, "warmup_s": 300.0},
        ["hpa", "predictive"],
    ),
    "agent-azure-10s-bins": (
        AGENT,
        AZURE,
        {"rate_scale": 4.0, "time_scale": 10.0, "warmup_s": 3600.0},
        ["hpa", "predictive"],
    ),
    "agent-azure-discrete-event": (
        AGENT,
        AZURE,
        {"rate_scale": 2.0, "end_s": 900.0, "warmup_s": 120.0, "fidelity": "discrete-event"},
        ["static-peak", "hpa"],
    ),
}

#: name -> (pipeline, trace, prepare_trace keyword arguments, fidelity, policies recorded)
REPLAYS: dict[str, tuple[Path, Path, dict[str, Any], str, list[str]]] = {
    "agent-azure-fast": (AGENT, AZURE, {"rate_scale": 4.0, "end_s": 1800.0}, "fast",
                         ["elastiscale", "oracle"]),
    "rag-mooncake-fast": (RAG, MOONCAKE, {"end_s": 1800.0}, "fast", ["elastiscale"]),
    "agent-azure-discrete-event": (AGENT, AZURE, {"rate_scale": 2.0, "end_s": 900.0},
                                   "discrete-event", ["elastiscale"]),
}  # fmt: skip

METRICS_DELAY_S = api.DEFAULT_METRICS_DELAY_S
RATE_WINDOW_S = api.DEFAULT_RATE_WINDOW_S


def _hash_arrays(h: Any, *arrays: Any) -> None:
    for values in arrays:
        data = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
        h.update(str(data.shape).encode())
        h.update(data.tobytes())


def result_digest(result: SimulationResult) -> str:
    """sha256 of every number of a simulation result, in a fixed order."""
    h = hashlib.sha256()
    _hash_arrays(
        h,
        result.latency_s,
        result.weight,
        result.completed_at_s,
        [result.dropped_requests, result.ingress_requests, result.scaling_actions],
    )
    for name in sorted(result.components):
        series = result.components[name]
        h.update(name.encode())
        for field in sorted(vars(series)):
            h.update(field.encode())
            _hash_arrays(h, getattr(series, field))
    return h.hexdigest()


def _clean(value: Any) -> Any:
    """Scores as JSON: NaN and inf as strings, so they compare equal after a round trip."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def compute_backtest(name: str) -> dict[str, Any]:
    pipeline, trace, kwargs, policies = BACKTESTS[name]
    report = elastiscale.backtest(pipeline, trace, policies, **kwargs)
    return {
        label: {"score": _clean(run.score.to_dict()), "digest": result_digest(run.result)}
        for label, run in report.runs.items()
    }


def record_commands(name: str, policy_name: str) -> list[list[Any]]:
    """The scaling commands `policy_name` issues in replay `name`: [t_s, component, replicas]."""
    pipeline, trace_path, kwargs, fidelity, _ = REPLAYS[name]
    config = load_config(pipeline)
    trace = api.prepare_trace(trace_path, **kwargs)
    initial = baselines.initial_replicas(config, trace)
    policy = baselines.build_policy(policy_name, config, {}, trace=trace)
    commands: list[list[Any]] = []
    original = runner.SimulatorActuator.scale

    def scale(self: Any, component: str, replicas: int) -> Any:
        commands.append([self.simulator.now_s, component, int(replicas)])
        return original(self, component, replicas)

    runner.SimulatorActuator.scale = scale  # type: ignore[method-assign]
    try:
        runner.simulate(
            config, trace, policy, fidelity=fidelity, initial_replicas=initial,
            metrics_delay_s=METRICS_DELAY_S, rate_window_s=RATE_WINDOW_S,
        )  # fmt: skip
    finally:
        runner.SimulatorActuator.scale = original  # type: ignore[method-assign]
    return commands


def replay(name: str, commands: list[list[Any]]) -> dict[str, str]:
    """Replay `commands` into a fresh simulator at the control ticks; digest what is seen."""
    pipeline, trace_path, kwargs, fidelity, _ = REPLAYS[name]
    config = load_config(pipeline)
    trace = api.prepare_trace(trace_path, **kwargs)
    initial = baselines.initial_replicas(config, trace)
    sim = runner.build_simulator(config, trace, initial, fidelity=fidelity)
    clock = FakeClock(trace.start_s)
    metrics = SimulatedMetricSource(
        sim, config, clock, rate_window_s=RATE_WINDOW_S, delay_s=METRICS_DELAY_S,
        has_tokens=trace.has_unit("tokens"),
    )  # fmt: skip
    names = list(config.pipeline.components)
    tick_s = config.control.interval_s
    ticks = max(1, math.ceil(trace.duration_s / tick_s - 1e-9))
    seen = hashlib.sha256()
    pending = list(commands)
    for k in range(ticks):
        now_s = trace.start_s + k * tick_s
        sim.advance_to(now_s)
        clock.set(now_s)
        for obs in metrics.observe(names, now_s).values():
            seen.update(repr(obs).encode())
        for state in (sim.state(n) for n in names):
            seen.update(repr(state).encode())
        while pending and pending[0][0] <= sim.now_s + 1e-9:
            _, component, replicas = pending.pop(0)
            sim.set_desired(component, replicas)
    assert not pending, f"{len(pending)} commands after the last tick"
    sim.advance_to(trace.end_s)
    return {"observations": seen.hexdigest(), "result": result_digest(sim.result())}


def compute_all(recorded: dict[str, dict[str, list[list[Any]]]] | None = None) -> dict[str, Any]:
    """The whole reference; `recorded` gives the stored commands (else they are recorded)."""
    out: dict[str, Any] = {"backtests": {}, "replays": {}}
    for name in BACKTESTS:
        out["backtests"][name] = compute_backtest(name)
    for name, (*_, policies) in REPLAYS.items():
        out["replays"][name] = {}
        for policy_name in policies:
            if recorded is None:
                commands = record_commands(name, policy_name)
            else:
                commands = recorded[name][policy_name]
            out["replays"][name][policy_name] = {"commands": commands, **replay(name, commands)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {DATA}")
    parser.add_argument(
        "--keep-commands",
        action="store_true",
        help="replay the stored scaling commands instead of recording them again",
    )
    args = parser.parse_args()
    recorded = None
    if args.keep_commands:
        stored = json.loads(DATA.read_text())["replays"]
        recorded = {n: {p: r["commands"] for p, r in by.items()} for n, by in stored.items()}
    reference = compute_all(recorded)
    text = json.dumps(reference, indent=1, sort_keys=True) + "\n"
    if args.write:
        DATA.parent.mkdir(exist_ok=True)
        DATA.write_text(text)
        print(f"wrote {DATA}")
    else:
        print(text)


if __name__ == "__main__":
    main()
