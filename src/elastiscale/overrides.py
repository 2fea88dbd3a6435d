"""Per-component parameters of a per-component policy: `params.components.<name>`.

Most teams run one autoscaler per workload, each with its own behavior; `elastiscale import`
carries them over as one policy whose parameters differ by component:

    policies:
      - name: hpa
        params:
          metrics: [demand_rps]           # every component
          components:
            llm:                           # laid over the shared ones for llm only
              behavior: {scale_down: {stabilization_window_s: 600}}

Any policy built on `PerComponentPolicy` with a `Params` model (hpa, kpa, ray-serve,
step-scaling, target-tracking, predictive) accepts the key, unless its model defines a field of
that name itself. A component's parameters are the shared ones deep-merged with its own (a
nested mapping such as `behavior` is merged key by key), validated by the same model, and each
distinct set builds its own instance; `ByComponent` routes every component to its instance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from pydantic import BaseModel

#: The parameter that holds per-component overrides.
OVERRIDES_KEY: Final = "components"


class PerComponent(Protocol):
    """What this module needs of a per-component policy (`controllers.base.PerComponentPolicy`;
    named structurally so that the registry, below the policies, need not import them)."""

    name: str

    def propose_component(self, ctx: Any, component: str) -> Any: ...


def supports_overrides(factory: Any, model: type[BaseModel] | None) -> bool:
    """Whether `factory` takes `params.components` through this module: a class deciding each
    component alone (`propose_component`) whose `Params` has no field of that name."""
    return (
        isinstance(factory, type)
        and callable(getattr(factory, "propose_component", None))
        and model is not None
        and OVERRIDES_KEY not in model.model_fields
    )


def deep_merge(base: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """`own` laid over `base`; mappings present in both are merged, anything else replaced."""
    out = dict(base)
    for key, value in own.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def split(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(shared params, component -> its merged params); raises ValueError on a bad shape."""
    shared = dict(params)
    raw = shared.pop(OVERRIDES_KEY, None)
    if raw is None:
        return shared, {}
    if not isinstance(raw, Mapping):
        raise ValueError("expected a mapping of component name to parameters")
    merged: dict[str, dict[str, Any]] = {}
    for name, own in raw.items():
        if not isinstance(own, Mapping):
            raise ValueError(f"{name}: expected a mapping of parameters")
        merged[str(name)] = deep_merge(shared, own)
    return shared, merged


class ByComponent:
    """One policy name over several instances: `own[component]`, else `default`."""

    def __init__(self, default: PerComponent, own: Mapping[str, PerComponent]) -> None:
        self.default = default
        self.own = dict(own)
        self.name = default.name

    def instance_for(self, component: str) -> PerComponent:
        return self.own.get(component, self.default)

    def propose(self, ctx: Any) -> dict[str, Any]:
        """One proposal per component of `ctx` (a `TickContext`), from its own instance."""
        return {n: self.instance_for(n).propose_component(ctx, n) for n in ctx.pipeline.order}

    def close(self) -> None:
        for policy in {id(p): p for p in (self.default, *self.own.values())}.values():
            closer = getattr(policy, "close", None)
            if callable(closer):
                closer()


def build(
    factory: Callable[..., Any],
    model: type[BaseModel],
    params: Mapping[str, Any],
    make: Callable[[Any], Any],
) -> Any:
    """Build `factory` with per-component overrides: `make(validated params)` per distinct set.
    Without overrides it is `make(model.model_validate(params))`."""
    shared, merged = split(params)
    default = make(model.model_validate(shared))
    if not merged:
        return default
    own = {name: make(model.model_validate(p)) for name, p in merged.items()}
    return ByComponent(default, own)
