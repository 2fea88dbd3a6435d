"""Ray Serve config (`serve deploy` YAML) -> the `ray-serve` policy, one component per deployment.

Carried over, per deployment: `autoscaling_config` (`min_replicas`, `max_replicas`,
`initial_replicas`, `target_ongoing_requests` or its older name
`target_num_ongoing_requests_per_replica`, `look_back_period_s`, `aggregation_function`,
`upscale_delay_s`, `downscale_delay_s`, `downscale_to_zero_delay_s`, `upscaling_factor` /
`downscaling_factor` or their older names `upscale_smoothing_factor` /
`downscale_smoothing_factor`, and `smoothing_factor` as the default of both),
`num_replicas` (a fixed count as min = max; `auto` as Ray's defaults for it) and
`ray_actor_options.num_gpus` (`gpus_per_replica`). A custom `policy`, `metrics_interval_s`
and the application-level `autoscaling_policy` are named in notes.
"""

from __future__ import annotations

from typing import Any, Final

from elastiscale.importer.model import (
    ImportedComponent,
    ImportRefusedError,
    integer,
    mapping,
    number,
)

#: Ray's key -> the `ray-serve` policy's parameter.
PARAMS: Final = {
    "target_ongoing_requests": "target_ongoing_requests",
    "target_num_ongoing_requests_per_replica": "target_ongoing_requests",
    "look_back_period_s": "look_back_period_s",
    "aggregation_function": "aggregation_function",
    "upscale_delay_s": "upscale_delay_s",
    "downscale_delay_s": "downscale_delay_s",
    "downscale_to_zero_delay_s": "downscale_to_zero_delay_s",
    "upscaling_factor": "upscaling_factor",
    "downscaling_factor": "downscaling_factor",
    "upscale_smoothing_factor": "upscaling_factor",
    "downscale_smoothing_factor": "downscaling_factor",
}
_BOUNDS: Final = {"min_replicas", "max_replicas", "initial_replicas", "smoothing_factor"}
#: Ray Serve's defaults for `num_replicas: auto` (DeploymentConfig, Ray 2.x).
AUTO_DEFAULTS: Final = {"min_replicas": 1, "max_replicas": 100, "target_ongoing_requests": 2}


def read_serve_config(doc: dict[str, Any], origin: str) -> list[ImportedComponent]:
    apps = doc.get("applications")
    if not isinstance(apps, list) or not apps:
        raise ImportRefusedError(f"{origin}: applications: required (a list of applications)")
    found: list[ImportedComponent] = []
    names: dict[str, int] = {}
    for a, app in enumerate(apps):
        app = mapping(app, f"{origin}: applications[{a}]")
        deployments = app.get("deployments") or []
        if not isinstance(deployments, list):
            raise ImportRefusedError(f"{origin}: applications[{a}].deployments: expected a list")
        for d, dep in enumerate(deployments):
            where = f"applications[{a}].deployments[{d}]"
            comp = _deployment(mapping(dep, f"{origin}: {where}"), f"{origin}: {where}")
            if comp is None:
                continue
            names[comp.name] = names.get(comp.name, 0) + 1
            if names[comp.name] > 1:  # the same deployment name in two applications
                comp.name = f"{app.get('name', a)}-{comp.name}"
            found.append(comp)
        if found and "autoscaling_policy" in app:
            found[-1].note(
                f"applications[{a}].autoscaling_policy",
                "an application-level policy is not carried over",
            )
    if not found:
        raise ImportRefusedError(f"{origin}: applications: no deployment with autoscaling_config")
    return found


def _deployment(dep: dict[str, Any], origin: str) -> ImportedComponent | None:
    name = dep.get("name")
    if not isinstance(name, str) or not name:
        raise ImportRefusedError(f"{origin}.name: required")
    auto = dep.get("autoscaling_config")
    replicas = dep.get("num_replicas")
    if auto is None and replicas not in ("auto", None):
        count = integer(replicas, f"{origin}.num_replicas", 1)
        comp = ImportedComponent(name, origin, "ray-serve", count, count)
        comp.note("num_replicas", f"a fixed {count}: carried over as min = max = {count}")
    elif auto is None and replicas is None:
        return None  # not autoscaled, no count: Ray's single replica, nothing to carry
    else:
        config = {**(AUTO_DEFAULTS if replicas == "auto" else {}), **mapping(auto, origin)}
        comp = ImportedComponent(
            name,
            origin,
            "ray-serve",
            integer(config.get("min_replicas", 1), f"{origin}.autoscaling_config.min_replicas"),
            integer(config.get("max_replicas", 1), f"{origin}.autoscaling_config.max_replicas", 1),
        )
        if "initial_replicas" in config:
            comp.replicas_initial = integer(
                config["initial_replicas"], f"{origin}.autoscaling_config.initial_replicas"
            )
        _params(config, comp, origin)
    gpus = mapping(dep.get("ray_actor_options"), f"{origin}.ray_actor_options").get("num_gpus")
    if gpus is not None:
        comp.gpus_per_replica = number(gpus, f"{origin}.ray_actor_options.num_gpus")
    if "max_ongoing_requests" in dep:
        comp.note("max_ongoing_requests", "not carried over (a replica's admission limit)")
    return comp


def _params(config: dict[str, Any], comp: ImportedComponent, origin: str) -> None:
    smoothing = config.get("smoothing_factor")
    if smoothing is not None:
        value = number(smoothing, f"{origin}.autoscaling_config.smoothing_factor")
        comp.params["upscaling_factor"] = comp.params["downscaling_factor"] = value
    for key, value in config.items():
        if key in _BOUNDS:
            continue
        ours = PARAMS.get(key)
        if ours is None:
            comp.note(f"autoscaling_config.{key}", "not carried over")
            continue
        if value is None:
            continue
        comp.params[ours] = (
            value
            if key == "aggregation_function"
            else number(value, f"{origin}.autoscaling_config.{key}")
        )
