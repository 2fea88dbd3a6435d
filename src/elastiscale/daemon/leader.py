"""Leader election through a Kubernetes Lease (coordination.k8s.io/v1), so that several sidecar
replicas can run and exactly one of them acts.

The rules are those of client-go's leaderelection package, with its Lease lock:

- the Lease's `spec.holderIdentity` names the leader; the leader rewrites `spec.renewTime`
  every `renew_s`. Every write carries the resourceVersion it read, so of two candidates racing
  for one Lease the API server accepts one write and refuses the other (409);
- a candidate does not trust the times written in the Lease (another node's clock): it notes,
  on its own monotonic clock, when it last saw the Lease change, and takes over only after
  seeing no change for `leaseDurationSeconds` (or when the holder is empty: released);
- the leader stops acting when its last successful renewal, timed from before the request was
  sent, is older than `duration_s - renew_s`, which is before any candidate may take over;
- a leader that shuts down cleanly releases the Lease (empty holder) so a follower takes over
  at its next attempt instead of after the whole duration.

Worked example, duration 15 s, renew 2 s: the leader is killed at t = 100 s, having last
renewed at 99 s; a follower saw that renewal at its attempt at 99.5 s, so it takes over at
114.5 s (it schedules an attempt for exactly that moment), within duration + renew of the
death. A leader cut off from the API at 99 s stops acting at 99 + 13 = 112 s.

`LeaseElector.attempt(mono_s, wall_s)` does one round (read, then create, renew or take over)
with times passed in; `LeaderLoop` runs it on a thread on the system clocks.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from elastiscale.adapters.base import Failure
from elastiscale.adapters.kubernetes.calls import KubeCallError, call
from elastiscale.config import Config
from elastiscale.config.daemon import LeaderElectionConfig
from elastiscale.errors import ActuatorError
from elastiscale.extras import require

log = logging.getLogger("elastiscale.daemon.leader")

#: Longest wait for the release at shutdown (and for the election thread to finish a round).
RELEASE_TIMEOUT_S = 1.5


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """What one read of the Lease said."""

    holder: str
    duration_s: float | None
    transitions: int
    acquire_time: str | None
    resource_version: str | None


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """Where the Lease is and who this process is, with every default resolved."""

    name: str
    namespace: str | None
    identity: str
    duration_s: float
    renew_s: float
    timeout_s: float
    connection: Literal["auto", "in-cluster", "kubeconfig"]
    kubeconfig: str | None
    context: str | None
    #: client-go's RenewDeadline: the holder stops acting this long after its last renewal;
    #: None means `duration_s - renew_s` (the leader-election block's rule).
    renew_deadline_s: float | None = None

    @property
    def deadline_s(self) -> float:
        """How long after its last successful renewal the holder may still act."""
        if self.renew_deadline_s is not None:
            return self.renew_deadline_s
        return self.duration_s - self.renew_s


def wants_election(config: Config, dry_run: bool) -> bool:
    """Whether this run elects a leader: `enabled: auto` means when the actuator is
    Kubernetes. A dry run acts on nothing, so it never needs to lead."""
    enabled = config.daemon.leader_election.enabled
    if dry_run:
        return False
    if enabled == "auto":
        return config.actuator is not None and config.actuator.type == "kubernetes"
    return bool(enabled)


def default_lease_name(pipeline_name: str) -> str:
    """`elastiscale-<pipeline name>` made a valid Lease name: `RAG QA` -> `elastiscale-rag-qa`."""
    slug = re.sub(r"[^a-z0-9-]+", "-", pipeline_name.lower()).strip("-") or "pipeline"
    return f"elastiscale-{slug}"[:253].rstrip("-")


def resolve_settings(config: Config, identity: str | None = None) -> LeaseSettings:
    """The Lease settings of `config`, defaults filled from the Kubernetes actuator's section,
    the pod's environment ($POD_NAME, $POD_NAMESPACE) and the host."""
    own: LeaderElectionConfig = config.daemon.leader_election
    actuator: dict[str, Any] = {}
    if config.actuator is not None and config.actuator.type == "kubernetes":
        actuator = config.actuator.options()
    namespace = own.namespace or actuator.get("namespace") or os.environ.get("POD_NAMESPACE")
    return LeaseSettings(
        name=own.lease_name or default_lease_name(config.pipeline.name),
        namespace=namespace or None,
        identity=identity
        or own.identity
        or os.environ.get("POD_NAME")
        or f"{socket.gethostname()}-{os.getpid()}",
        duration_s=own.duration_s,
        renew_s=own.renew_s,
        timeout_s=own.timeout_s,
        connection=own.connection or actuator.get("connection") or "auto",
        kubeconfig=own.kubeconfig or actuator.get("kubeconfig"),
        context=own.context or actuator.get("context"),
    )


def connect_coordination(settings: LeaseSettings) -> tuple[Any, str]:
    """A CoordinationV1Api client and the Lease's namespace; ActuatorError when no Kubernetes
    configuration can be loaded."""
    require("kubernetes", "kubernetes", "leader election (a Kubernetes Lease)")
    from kubernetes import client as k8s

    from elastiscale.adapters.kubernetes.actuator import connect
    from elastiscale.adapters.kubernetes.options import KubernetesOptions

    # Only the connection fields are read; the actuator's targets do not matter here.
    options = KubernetesOptions.model_construct(
        targets={},
        namespace=settings.namespace,
        connection=settings.connection,
        kubeconfig=settings.kubeconfig,
        context=settings.context,
    )
    api_client, namespace = connect(options)
    return k8s.CoordinationV1Api(api_client), namespace


def _micro_time(wall_s: float) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    stamp = _dt.datetime.fromtimestamp(wall_s, tz=_dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_record(lease: Any) -> LeaseRecord:
    """A `V1Lease` (as the official client returns it, alone or in a list) as a record."""
    spec = lease.spec
    duration = getattr(spec, "lease_duration_seconds", None) if spec is not None else None
    acquired = getattr(spec, "acquire_time", None) if spec is not None else None
    return LeaseRecord(
        holder=(getattr(spec, "holder_identity", None) or "") if spec is not None else "",
        duration_s=float(duration) if duration else None,
        transitions=int(getattr(spec, "lease_transitions", None) or 0) if spec else 0,
        acquire_time=_micro_time(acquired.timestamp()) if acquired is not None else None,
        resource_version=lease.metadata.resource_version if lease.metadata else None,
    )


class LeaseElector:
    """One candidate for one Lease (see the module docstring). Thread-safe.

    `labels` are written on the Lease (so a set of Leases can be listed by label selector,
    as the shard members do)."""

    def __init__(
        self,
        api: Any,
        namespace: str,
        settings: LeaseSettings,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.settings = settings
        self.labels = dict(labels or {})
        self._lock = threading.Lock()
        self._leader = False
        self._renewed_mono_s = float("-inf")
        self._observed: LeaseRecord | None = None
        self._observed_mono_s = float("-inf")
        #: Who held the Lease at the last read ("" when nobody), for logs and /readyz.
        self.holder: str | None = None

    @property
    def identity(self) -> str:
        return self.settings.identity

    @property
    def label(self) -> str:
        return f"Lease {self.namespace}/{self.settings.name}"

    def is_leader(self, mono_s: float) -> bool:
        """Whether this process may act at monotonic time `mono_s`."""
        deadline_s = self.settings.deadline_s
        with self._lock:
            return self._leader and mono_s < self._renewed_mono_s + deadline_s

    def next_attempt_in(self, mono_s: float) -> float:
        """Seconds until the next attempt: `renew_s`, or sooner when the Lease another holds
        expires sooner (so takeover does not wait for the next regular attempt)."""
        with self._lock:
            record, seen_s = self._observed, self._observed_mono_s
            leader = self._leader
        if leader or record is None or not record.holder:
            return self.settings.renew_s
        expires_s = seen_s + (record.duration_s or self.settings.duration_s)
        return max(0.0, min(self.settings.renew_s, expires_s - mono_s))

    # --- one round ----------------------------------------------------------------------------

    def attempt(self, mono_s: float, wall_s: float) -> bool:
        """Read the Lease, then create, renew or take it over as the rules allow; returns
        whether this process leads afterwards. API failures are logged, never raised."""
        return self._round(None, mono_s, wall_s, read=True)

    def attempt_on(self, record: LeaseRecord | None, mono_s: float, wall_s: float) -> bool:
        """`attempt` with the read already done (`record`, None when the Lease does not
        exist), e.g. by one list of many Leases; `mono_s` is the time before that read. A
        stale record costs nothing but a 409: the write carries its resourceVersion."""
        return self._round(record, mono_s, wall_s, read=False)

    def observe(self, record: LeaseRecord, mono_s: float) -> None:
        """Note a read of the Lease made by someone else (a list) without writing: the time
        it was last seen changing is what a takeover waits on."""
        self._observe(record, mono_s)

    @property
    def observed_mono_s(self) -> float:
        """When (monotonic) the Lease was last seen changing, as another holder wrote it."""
        with self._lock:
            return self._observed_mono_s

    @property
    def holding(self) -> bool:
        """Whether the last round won the Lease (it may have expired since; see is_leader)."""
        with self._lock:
            return self._leader

    def _round(self, given: LeaseRecord | None, mono_s: float, wall_s: float, read: bool) -> bool:
        try:
            record = self._read() if read else given
            if record is None:
                self._create(wall_s)
                self._won(mono_s, None)
            else:
                self._observe(record, mono_s)
                if record.holder == self.identity:
                    self._write(record, wall_s, taking_over=False)
                    self._won(mono_s, record)
                elif self._may_take_over(record, mono_s):
                    self._write(record, wall_s, taking_over=True)
                    self._won(mono_s, record)
                else:
                    self._lost(f"held by {record.holder}")
        except KubeCallError as exc:
            if exc.failure in (Failure.CONFLICT, Failure.NOT_FOUND):
                self._lost(f"another candidate wrote first ({exc.message})")
            else:
                log.warning("%s: %s", self.label, exc.message)
                raise
        return self.is_leader(mono_s)

    def release(self, wall_s: float) -> None:
        """Give the Lease up (empty holder) when this process holds it; failures are logged."""
        with self._lock:
            leading = self._leader
            self._leader = False
        if not leading:
            return
        try:
            # Short waits: a release is part of shutting down, which must not take long.
            short_s = min(self.settings.timeout_s, RELEASE_TIMEOUT_S)
            record = self._read(short_s)
            if record is None or record.holder != self.identity:
                return
            spec = {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": record.acquire_time,
                "renewTime": _micro_time(wall_s),
                "leaseTransitions": record.transitions,
            }
            self._call(
                self.api.replace_namespaced_lease,
                self.settings.name,
                self.namespace,
                self._body(spec, record.resource_version),
                timeout_s=short_s,
            )
            log.info("%s released by %s", self.label, self.identity)
        except KubeCallError as exc:
            log.warning("%s: release failed: %s", self.label, exc.message)

    # --- internals ----------------------------------------------------------------------------

    def _may_take_over(self, record: LeaseRecord, mono_s: float) -> bool:
        if not record.holder:
            return True
        duration_s = record.duration_s or self.settings.duration_s
        return mono_s >= self._observed_mono_s + duration_s

    def _observe(self, record: LeaseRecord, mono_s: float) -> None:
        with self._lock:
            if self._observed is None or record.resource_version != (
                self._observed.resource_version
            ):
                self._observed = record
                self._observed_mono_s = mono_s
            self.holder = record.holder

    def _won(self, mono_s: float, before: LeaseRecord | None) -> None:
        with self._lock:
            was_leader = self._leader
            self._leader = True
            self._renewed_mono_s = mono_s
            self.holder = self.identity
            self._observed = None  # our own write changed it; the next read is news again
        if not was_leader:
            previous = before.holder if before is not None and before.holder else "nobody"
            log.info(
                "%s: %s is now the leader (previous holder: %s)",
                self.label,
                self.identity,
                previous,
            )

    def _lost(self, why: str) -> None:
        with self._lock:
            was_leader = self._leader
            self._leader = False
        if was_leader:
            log.warning("%s: %s stopped leading: %s", self.label, self.identity, why)

    def _read(self, timeout_s: float | None = None) -> LeaseRecord | None:
        try:
            lease = self._call(
                self.api.read_namespaced_lease,
                self.settings.name,
                self.namespace,
                timeout_s=timeout_s,
            )
        except KubeCallError as exc:
            if exc.failure is Failure.NOT_FOUND:
                return None
            raise
        return lease_record(lease)

    def _create(self, wall_s: float) -> None:
        now = _micro_time(wall_s)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.settings.duration_s),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        }
        self._call(self.api.create_namespaced_lease, self.namespace, self._body(spec, None))

    def _write(self, record: LeaseRecord, wall_s: float, taking_over: bool) -> None:
        now = _micro_time(wall_s)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.settings.duration_s),
            "acquireTime": now if taking_over else (record.acquire_time or now),
            "renewTime": now,
            "leaseTransitions": record.transitions + (1 if taking_over else 0),
        }
        self._call(
            self.api.replace_namespaced_lease,
            self.settings.name,
            self.namespace,
            self._body(spec, record.resource_version),
        )

    def _body(self, spec: dict[str, Any], resource_version: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.settings.name, "namespace": self.namespace}
        if self.labels:
            meta["labels"] = dict(self.labels)
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    def _call(self, method: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> Any:
        return call(method, *args, timeout_s=timeout_s or self.settings.timeout_s)


class LeaderLoop:
    """Runs `LeaseElector.attempt` on a thread, on the system's monotonic and wall clocks.

    `connect` makes the elector (it may raise `ActuatorError` when Kubernetes cannot be
    reached; the loop retries every `renew_s`). `on_error` is told of each failed round.
    """

    def __init__(
        self,
        settings: LeaseSettings,
        connect: Callable[[LeaseSettings], tuple[Any, str]] = connect_coordination,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._connect = connect
        self._on_error = on_error
        self.elector: LeaseElector | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def is_leader(self) -> bool:
        elector = self.elector
        return elector is not None and elector.is_leader(time.monotonic())

    @property
    def holder(self) -> str | None:
        return self.elector.holder if self.elector is not None else None

    def attempt_now(self) -> bool:
        """One round on the calling thread (before the first tick, so a lone daemon leads
        from its first tick instead of its second)."""
        try:
            elector = self._elector()
            return elector.attempt(time.monotonic(), time.time())
        except (KubeCallError, ActuatorError) as exc:
            self._failed(exc)
            return False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        """Stop the thread and, with `release`, give the Lease up if this process holds it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=RELEASE_TIMEOUT_S)
        if release and self.elector is not None:
            self.elector.release(time.time())

    def _elector(self) -> LeaseElector:
        if self.elector is None:
            api, namespace = self._connect(self.settings)
            self.elector = LeaseElector(api, namespace, self.settings)
            log.info(
                "leader election on %s as %s (duration %g s, renew every %g s)",
                self.elector.label,
                self.settings.identity,
                self.settings.duration_s,
                self.settings.renew_s,
            )
        return self.elector

    def _run(self) -> None:
        delay_s = 0.0 if self.elector is None else self.settings.renew_s
        while not self._stop.wait(delay_s):
            delay_s = self.settings.renew_s
            try:
                elector = self._elector()
                elector.attempt(time.monotonic(), time.time())
                delay_s = elector.next_attempt_in(time.monotonic())
            except (KubeCallError, ActuatorError) as exc:
                self._failed(exc)
            except Exception:  # the thread must outlive any bug in one round
                log.exception("leader election round failed")
                self._failed(None)

    def _failed(self, exc: Exception | None) -> None:
        if isinstance(exc, ActuatorError):
            log.warning("leader election: %s", exc)
        if self._on_error is not None:
            self._on_error("leader_election")
