"""Scale the deployments of a running Ray Serve application from outside, over the dashboard's
REST API (the `ray-serve` actuator).

Two ways to set a deployment's replica count, chosen by `mode`:

- `external-scaler` (default): `POST /api/v1/applications/{app}/deployments/{deployment}/scale`
  with `{"target_num_replicas": n}`. Ray Serve accepts it only for applications deployed with
  `external_scaler_enabled: true`, which in turn forbids Serve's own autoscaling on every
  deployment of the application, so the two can never fight.
- `declarative`: read every application's deployed config from `GET /api/serve/applications/`,
  set the deployment's `num_replicas` and `PUT` the whole config back (what `serve deploy` does).
  It needs every application on the cluster to have been deployed from a config file, since a
  PUT replaces them all, and it refuses deployments that Serve autoscales itself.

Both endpoints exist in the Ray this was written and tested against, 2.60.0: the scale call
is served by the dashboard's Serve module (`ray/dashboard/modules/serve/serve_head.py`) and
answers 412 for an application without `external_scaler_enabled`.

The dashboard's token authentication is supported: the token is read from the environment
variable `auth_token_env` (default `RAY_AUTH_TOKEN`), else from `auth_token_file`, else from
`RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token` when present.

    actuator:
      type: ray-serve
      address: http://127.0.0.1:8265
      application: rag
      targets:
        router: router                    # a deployment of `application`
        llm: {deployment: vllm}
        embedder: other-app/embedder      # or of another application

After a write, further changes to that deployment are held (IN_PROGRESS) until Serve shows it
converged (every replica RUNNING and as many as the target) or `settle_timeout_s` has passed,
except a larger count on top of a scale-up, which goes ahead (Serve only starts more).
This module needs no Ray installation: it only speaks HTTP. Its in-package twin for tests is
`elastiscale.testing.ray_serve.FakeServeDashboard`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, NonNegativeFloat, field_validator

from elastiscale.adapters.base import ActuationResult, Failure
from elastiscale.adapters.contract import (
    ActuatorOptions,
    InProgressGuard,
    OtherAutoscalerError,
    TargetSpec,
)
from elastiscale.adapters.ray.client import ServeClient, ServeRequestError
from elastiscale.adapters.ray.startups import ReplicaStartups
from elastiscale.errors import ActuatorError
from elastiscale.observations import ReplicaState

if TYPE_CHECKING:
    from elastiscale.clock import Clock
    from elastiscale.config import Config

log = logging.getLogger("elastiscale.adapters.ray_serve")

#: Deployment statuses during which Serve is still applying a change.
_CONVERGING_STATUSES = frozenset({"UPDATING", "UPSCALING", "DOWNSCALING"})


class ServeTarget(TargetSpec):
    """A Serve deployment; `application` defaults to the actuator's `application`."""

    deployment: str = Field(..., min_length=1)
    application: str | None = Field(None, min_length=1)


class RayServeParams(ActuatorOptions[ServeTarget]):
    """The `actuator:` section of a config with `type: ray-serve`."""

    address: str = Field("http://127.0.0.1:8265", description="the Ray dashboard's URL")
    application: str = Field("default", min_length=1, description="the Serve application")
    mode: Literal["external-scaler", "declarative"] = "external-scaler"
    auth_token_env: str = Field("RAY_AUTH_TOKEN", description="environment variable with a token")
    auth_token_file: str | None = Field(None, description="file holding the dashboard token")
    settle_timeout_s: NonNegativeFloat = Field(
        600.0, description="longest hold of further changes after a write that does not converge"
    )
    check_on_start: bool = Field(
        True, description="check at construction that every target exists and may be scaled"
    )
    measure_startup: bool = Field(
        False, description="report replicas' start-ups (start_time_s to RUNNING; startups.py)"
    )

    @field_validator("address")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("targets", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """`llm: vllm` and `llm: app/vllm` stand for `{deployment: vllm, application: app}`."""
        if not isinstance(value, Mapping):
            return value
        out: dict[Any, Any] = {}
        for component, target in value.items():
            if isinstance(target, str):
                app, _, deployment = target.rpartition("/")
                if not deployment or "/" in app:
                    raise ValueError(
                        f"{component}: {target!r} is not 'deployment' or 'application/deployment'"
                    )
                target = {"deployment": deployment, **({"application": app} if app else {})}
            out[component] = target
        return out

    def target_of(self, component: str) -> tuple[str, str]:
        """(application, deployment) of a component's target."""
        target = self.targets[component]
        return (target.application or self.application, target.deployment)


def read_token(params: RayServeParams) -> str | None:
    """The dashboard token, from the first of: env var, configured file, Ray's own places."""
    from_env = os.environ.get(params.auth_token_env, "").strip()
    if from_env:
        return from_env
    candidates: list[tuple[Path, bool]] = []
    if params.auth_token_file is not None:
        candidates.append((Path(params.auth_token_file).expanduser(), True))
    ray_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if ray_path:
        candidates.append((Path(ray_path).expanduser(), False))
    candidates.append((Path.home() / ".ray" / "auth_token", False))
    for path, required in candidates:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            if required:
                raise ActuatorError(
                    f"actuator.auth_token_file: cannot read {str(path)!r}: {exc.strerror or exc}"
                ) from None
            continue
        if token:
            return token
    return None


# --------------------------------------------------------------------------------------------
# Reading `GET /api/serve/applications/`


class UnexpectedAnswerError(Exception):
    """A dashboard answer of a shape the actuator cannot read (named in the message)."""


def deployment_details(
    instance: Mapping[str, Any], application: str, deployment: str
) -> dict[str, Any] | None:
    """The details of one deployment in a `GET /api/serve/applications/` answer, or None."""
    app = instance["applications"].get(application)
    if not isinstance(app, dict):
        return None
    deployments = app.get("deployments") or {}
    if not isinstance(deployments, dict):
        raise UnexpectedAnswerError(f"application {application}: deployments is not a mapping")
    found = deployments.get(deployment)
    return found if isinstance(found, dict) else None


def _replicas(details: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    replicas = details.get("replicas") or []
    if not isinstance(replicas, list) or not all(isinstance(r, dict) for r in replicas):
        raise UnexpectedAnswerError("replicas is not a list of objects")
    return replicas


def _target(details: Mapping[str, Any]) -> int:
    value = details.get("target_num_replicas", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UnexpectedAnswerError(f"target_num_replicas = {value!r} is not a count")
    return value


def replica_state(details: Mapping[str, Any]) -> ReplicaState:
    """Desired = Serve's target; ready = replicas in state RUNNING."""
    ready = sum(1 for r in _replicas(details) if r.get("state") == "RUNNING")
    return ReplicaState(desired=_target(details), ready=ready)


def converged(details: Mapping[str, Any]) -> bool:
    """Whether Serve has finished applying changes to this deployment: not updating or scaling,
    every replica RUNNING, and as many of them as the target."""
    status = details.get("status")
    if isinstance(status, str) and status in _CONVERGING_STATUSES:
        return False
    replicas = _replicas(details)
    if any(r.get("state") != "RUNNING" for r in replicas):
        return False
    return len(replicas) == _target(details)


def declarative_config(
    instance: Mapping[str, Any], application: str, deployment: str, replicas: int
) -> dict[str, Any]:
    """The config that `PUT /api/serve/applications/` takes: every application as deployed, with
    `num_replicas` of one deployment set to `replicas`. Raises `ServeRequestError(INVALID)` when an
    application was deployed imperatively (it has no config, and a PUT would delete it)."""
    applications: list[dict[str, Any]] = []
    for name, app in instance["applications"].items():
        deployed = app.get("deployed_app_config")
        if not isinstance(deployed, dict):
            raise ServeRequestError(
                Failure.INVALID,
                f"application {name!r} was not deployed from a config; a declarative update "
                "would delete it",
            )
        app_config = json.loads(json.dumps(deployed))  # a deep copy of plain JSON
        if name == application:
            entries: list[dict[str, Any]] = app_config.setdefault("deployments", [])
            entry = next((d for d in entries if d.get("name") == deployment), None)
            if entry is None:
                entry = {"name": deployment}
                entries.append(entry)
            entry["num_replicas"] = replicas
        applications.append(app_config)
    out: dict[str, Any] = {"applications": applications}
    for key in ("proxy_location", "http_options", "grpc_options", "target_capacity"):
        if instance.get(key) is not None:
            out[key] = instance[key]
    return out


# --------------------------------------------------------------------------------------------


class RayServeActuator:
    """Reads and sets replica counts of Serve deployments through the dashboard REST API."""

    Params = RayServeParams

    def __init__(
        self,
        config: Config,
        options: RayServeParams | Mapping[str, Any],
        clock: Clock | None = None,
    ) -> None:
        params = RayServeParams.for_config(options, config)
        self.params = params
        self.client = ServeClient(params.address, read_token(params), params.timeout_s)
        self.guard = InProgressGuard(params.settle_timeout_s, clock, raise_while_scaling_up=True)
        #: The last count written to each deployment ("app/deployment").
        self.written: dict[str, int] = {}
        self._startups: dict[str, ReplicaStartups] = {}
        if params.check_on_start:
            self.check()

    def check(self) -> None:
        """Raise `ActuatorError` naming every target that is missing or may not be scaled in this
        mode, and `OtherAutoscalerError` when Serve's own autoscaling drives one (a warning
        instead with `allow_other_autoscalers: true`)."""
        try:
            instance = self.client.instance()
        except ServeRequestError as exc:
            raise ActuatorError(f"ray-serve: cannot read applications: {exc}") from None
        problems: list[str] = []
        autoscaled: list[str] = []
        apps: dict[str, Any] = instance["applications"]
        for component in self.params.targets:
            application, deployment = self.params.target_of(component)
            where = f"actuator.targets.{component} ({application}/{deployment})"
            app = apps.get(application)
            if app is None:
                known = ", ".join(sorted(apps)) or "none"
                problems.append(f"{where}: no application {application!r} (running: {known})")
                continue
            details = deployment_details(instance, application, deployment)
            if details is None:
                known = ", ".join(sorted(app.get("deployments") or {})) or "none"
                problems.append(f"{where}: no deployment {deployment!r} (deployments: {known})")
                continue
            if self.params.mode == "external-scaler":
                if not app.get("external_scaler_enabled"):
                    problems.append(
                        f"{where}: the application was not deployed with "
                        "external_scaler_enabled: true (needed by mode external-scaler)"
                    )
                continue
            if (details.get("deployment_config") or {}).get("autoscaling_config"):
                autoscaled.append(f"{where}: Serve autoscales this deployment (autoscaling_config)")
            if (app.get("deployed_app_config") or {}).get("autoscaling_policy"):
                autoscaled.append(f"{where}: the application has an autoscaling_policy")
        if self.params.mode == "declarative":
            imperative = sorted(n for n, a in apps.items() if not a.get("deployed_app_config"))
            if imperative:
                problems.append(
                    "actuator.mode: declarative needs every application deployed from a config; "
                    f"not so: {', '.join(imperative)}"
                )
        if problems:
            raise ActuatorError("; ".join(dict.fromkeys(problems)))
        if autoscaled and not self.params.allow_other_autoscalers:
            raise OtherAutoscalerError(
                "; ".join(autoscaled) + " (remove it, use mode external-scaler, or set "
                "allow_other_autoscalers: true)"
            )
        for line in autoscaled:
            log.warning("%s; scaling it anyway (allow_other_autoscalers)", line)

    # ----------------------------------------------------------------------------------------

    def read(self, components: Sequence[str]) -> dict[str, ReplicaState]:
        """Desired and ready replicas of each component found; raises `ActuatorError` when the
        dashboard cannot be read at all."""
        try:
            instance = self.client.instance()
        except ServeRequestError as exc:
            raise ActuatorError(f"ray-serve: {exc}") from None
        out: dict[str, ReplicaState] = {}
        for name in components:
            if name not in self.params.targets:
                continue
            try:
                details = deployment_details(instance, *self.params.target_of(name))
                if details is None:
                    log.warning("ray-serve: no deployment for component %s", name)
                    continue
                out[name] = replica_state(details)
            except UnexpectedAnswerError as exc:
                log.warning("ray-serve: cannot read %s: %s", name, exc)
        return out

    def startups(
        self, components: Sequence[str], now_s: float | None = None
    ) -> dict[str, list[float]]:
        """Start-ups of the targets' replicas that turned RUNNING since the last call, looked
        at `now_s`, with `measure_startup: true` (else none; `adapters.ray.startups`)."""
        if not self.params.measure_startup or now_s is None:
            return {}
        try:
            instance = self.client.instance()
        except ServeRequestError as exc:
            raise ActuatorError(f"ray-serve: {exc}") from None
        out: dict[str, list[float]] = {}
        for name in (n for n in components if n in self.params.targets):
            try:
                details = deployment_details(instance, *self.params.target_of(name))
                if details is not None:
                    tracker = self._startups.setdefault(name, ReplicaStartups())
                    out[name] = tracker.look(now_s, _replicas(details))
            except UnexpectedAnswerError as exc:
                log.debug("ray-serve: start-ups of %s: %s", name, exc)
        return out

    def scale(self, component: str, replicas: int) -> ActuationResult:
        """Set the target replica count of the component's deployment (idempotent)."""
        if component not in self.params.targets:
            return ActuationResult.failed(
                component, replicas, Failure.NOT_FOUND, "no target for this component"
            )
        if replicas < 0:
            return ActuationResult.failed(
                component, replicas, Failure.INVALID, f"replicas = {replicas} < 0"
            )
        application, deployment = self.params.target_of(component)
        where = f"{application}/{deployment}"
        try:
            instance = self.client.instance()
            details = deployment_details(instance, application, deployment)
            if details is None:
                return ActuationResult.failed(
                    component, replicas, Failure.NOT_FOUND, f"no deployment {where}"
                )
            current = _target(details)
            if current == replicas:
                return ActuationResult.success(component, replicas)
            # Taken in: Serve shows our count as the target, and has converged on it.
            ours = self.written.get(where, current) == current
            waiting = self.guard.pending(
                where, settled=ours and converged(details), replicas=replicas
            )
            if waiting is not None:
                return ActuationResult.failed(
                    component, replicas, Failure.IN_PROGRESS, f"{where}: {waiting}"
                )
            if self.params.mode == "external-scaler":
                self.client.scale(application, deployment, replicas)
            else:
                self.client.deploy(declarative_config(instance, application, deployment, replicas))
        except ServeRequestError as exc:
            return ActuationResult.failed(
                component, replicas, exc.failure, str(exc), exc.retry_after_s
            )
        except UnexpectedAnswerError as exc:
            return ActuationResult.failed(component, replicas, Failure.INVALID, f"{where}: {exc}")
        self.guard.wrote(where, replicas, previous=current)
        self.written[where] = replicas
        log.info("scaled %s (%s) from %d to %d replicas", component, where, current, replicas)
        return ActuationResult.success(component, replicas)
