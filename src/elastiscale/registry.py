"""One registry for every pluggable kind: policies, forecasters, metric sources, actuators.

A name resolves, in order, to:
1. a built-in (the tables below, imported lazily so unused integrations cost nothing);
2. an object registered at run time with `register(kind, name, obj)`;
3. `package.module:attr`, imported as written (a user's own class in a config file);
4. an entry point of the kind's group (`elastiscale.policies`, ...), for installed plugins.

What a name resolves to is a factory called as `factory(config, params)`. When the factory has
a `Params` attribute that is a pydantic model, `params` is validated with it first, so a bad
parameter is reported by `elastiscale validate` like any other field.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from elastiscale import extras, spellings
from elastiscale.errors import RegistryError

#: Entry-point group of each kind.
GROUPS: Final[Mapping[str, str]] = {
    "policy": "elastiscale.policies",
    "forecaster": "elastiscale.forecasters",
    "metric_source": "elastiscale.metric_sources",
    "actuator": "elastiscale.actuators",
}

_BUILTINS: Final[dict[str, dict[str, str]]] = {
    "policy": {
        "hpa": "elastiscale.controllers.hpa:HPAPolicy",
        "kpa": "elastiscale.controllers.kpa:KPAPolicy",
        "step-scaling": "elastiscale.controllers.step_scaling:StepScalingPolicy",
        "target-tracking": "elastiscale.controllers.target_tracking:TargetTrackingPolicy",
        "ray-serve": "elastiscale.controllers.ray_serve_policy:RayServePolicy",
        "static-peak": "elastiscale.backtest.baselines:StaticPeakPolicy",
        "static-budget": "elastiscale.backtest.static_budget:StaticBudgetPolicy",
        "oracle": "elastiscale.backtest.oracle:BoundOraclePolicy",
        "predictive": "elastiscale.controllers.predictive:PredictivePolicy",
        "elastiscale": "elastiscale.controllers.feedforward:ElastiscalePolicy",
    },
    "forecaster": {
        "last-value": "elastiscale.forecasting.naive:LastValue",
        "seasonal-naive": "elastiscale.forecasting.naive:SeasonalNaive",
        "ewma": "elastiscale.forecasting.smoothing:EWMA",
        "holt": "elastiscale.forecasting.smoothing:Holt",
        "holt-winters": "elastiscale.forecasting.holt_winters:HoltWinters",
        "arima": "elastiscale.forecasting.arima:Arima",
        "ensemble": "elastiscale.forecasting.ensemble:Ensemble",
        "auto": "elastiscale.forecasting.selection:AutoSelect",
    },
    "metric_source": {
        "trace": "elastiscale.adapters.memory:trace_metric_source",
        "prometheus": "elastiscale.adapters.prometheus.source:PrometheusMetricSource",
    },
    "actuator": {
        "recording": "elastiscale.adapters.memory:recording_actuator",
        "dry-run": "elastiscale.adapters.memory:dry_run_actuator",
        "kubernetes": "elastiscale.adapters.kubernetes.actuator:KubernetesActuator",
        "ray-serve": "elastiscale.adapters.ray.actuator:RayServeActuator",
        "sagemaker": "elastiscale.adapters.sagemaker.actuator:SageMakerActuator",
    },
}

_REGISTERED: dict[str, dict[str, Any]] = {kind: {} for kind in GROUPS}


def _check_kind(kind: str) -> None:
    if kind not in GROUPS:
        raise RegistryError(f"unknown kind {kind!r}; kinds: {', '.join(GROUPS)}")


def register(kind: str, name: str, obj: Any) -> None:
    """Make `obj` resolvable as `name` of `kind` in this process (e.g. from a test)."""
    _check_kind(kind)
    _REGISTERED[kind][name] = obj


def names(kind: str) -> list[str]:
    """Every name of `kind` known without importing user code: built-ins, registered, installed."""
    _check_kind(kind)
    found = set(_BUILTINS[kind]) | set(_REGISTERED[kind])
    found |= {ep.name for ep in entry_points(group=GROUPS[kind])}
    return sorted(found)


def builtin_names(kind: str) -> list[str]:
    """The built-in names of `kind` in the table's order (whether or not their code is here)."""
    _check_kind(kind)
    return list(_BUILTINS[kind])


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def resolve(kind: str, name: str) -> Any:
    """The factory registered as `name` of `kind`; raises `RegistryError` with the reason."""
    _check_kind(kind)
    if name in _REGISTERED[kind]:
        return _REGISTERED[kind][name]
    target = _BUILTINS[kind].get(name)
    if target is None and ":" in name:
        target = name
    if target is not None:
        try:
            return _import(target)
        except ModuleNotFoundError as exc:
            extra = extras.extra_for(exc)
            if extra is not None:
                raise RegistryError(
                    str(extras.MissingExtraError(extra, f"{kind} {name!r}", str(exc.name)))
                ) from None
            raise RegistryError(f"{kind} {name!r} cannot be loaded: {exc}") from None
        except (ImportError, AttributeError) as exc:
            raise RegistryError(f"{kind} {name!r} cannot be loaded: {exc}") from None
    for ep in entry_points(group=GROUPS[kind]):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as exc:  # a broken plugin must not crash validation
                raise RegistryError(
                    f"{kind} {name!r} (entry point) failed to load: {exc}"
                ) from None
    raise RegistryError(f"unknown {kind} {name!r}; known: {', '.join(names(kind))}")


def params_model(factory: Any) -> type[BaseModel] | None:
    model = getattr(factory, "Params", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model
    return None


def check(
    kind: str, name: str, params: Any, path: str, context: Mapping[str, Any] | None = None
) -> list[str]:
    """Problems with a config reference to a plugin, as `path.field: message` lines.

    `context` is passed to the `Params` model's validation (e.g. the pipeline's component
    names, so an actuator can check that its targets name real components). A per-component
    policy's `params.components.<name>` overrides are checked too (see
    `elastiscale.overrides`), naming unknown components when `context` lists them."""
    key = "name" if kind == "policy" else "type"
    try:
        factory = resolve(kind, name)
    except RegistryError as exc:
        return [f"{path}.{key}: {exc}"]
    model = params_model(factory)
    if model is None:
        return []
    sub = "params." if kind == "policy" else ""
    if kind == "policy" and isinstance(params, Mapping):
        from elastiscale import overrides

        if overrides.supports_overrides(factory, model):
            return _override_problems(model, params, f"{path}.{sub}", context)
    return _model_problems(model, params, path, sub, context)


def _model_problems(
    model: type[BaseModel], params: Any, path: str, sub: str, context: Mapping[str, Any] | None
) -> list[str]:
    try:
        model.model_validate(params, context=context)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                hint = spellings.hint_for(err["loc"][-1] if err["loc"] else None)
                msg = f"unknown key; {hint}" if hint else "unknown key (check the spelling)"
            where = f"{path}.{sub}{field}" if field else f"{path}{'.params' if sub else ''}"
            lines.append(f"{where}: {msg.removeprefix('Value error, ')}")
        return lines
    return []


def _override_problems(
    model: type[BaseModel],
    params: Mapping[str, Any],
    prefix: str,
    context: Mapping[str, Any] | None,
) -> list[str]:
    """The shared parameters' problems, then each component's own (a problem the shared set
    already has is not repeated under every component)."""
    from elastiscale import overrides

    try:
        shared, merged = overrides.split(params)
    except ValueError as exc:
        return [f"{prefix}{overrides.OVERRIDES_KEY}: {exc}"]
    lines = _model_problems(model, shared, prefix.removesuffix("."), "", context)
    seen = {line.removeprefix(prefix) for line in lines}
    known = (context or {}).get("components")
    for name, own in merged.items():
        where = f"{prefix}{overrides.OVERRIDES_KEY}.{name}"
        if known is not None and name not in known:
            lines.append(f"{where}: unknown component {name!r} (components: {', '.join(known)})")
            continue
        for line in _model_problems(model, own, prefix.removesuffix("."), "", context):
            rest = line.removeprefix(prefix)
            if rest not in seen:
                lines.append(f"{where}.{rest}")
    return lines


def build(kind: str, name: str, config: Any, params: Mapping[str, Any] | None = None) -> Any:
    """Resolve `name` and call its factory with `config` and (validated) `params`."""
    factory: Callable[..., Any] = resolve(kind, name)
    raw = dict(params or {})
    model = params_model(factory)
    if kind == "policy" and model is not None:
        from elastiscale import overrides

        if overrides.supports_overrides(factory, model):
            return overrides.build(factory, model, raw, lambda p: factory(config, p))
    validated: Any = model.model_validate(raw) if model is not None else raw
    return factory(config, validated)
