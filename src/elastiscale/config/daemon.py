"""The `daemon:` section of a config file: how `elastiscale run` serves, journals, logs and
elects a leader. Every field has a default, so a pipeline file without the section runs as is.

    daemon:
      listen: 127.0.0.1:9464            # /healthz, /readyz, /metrics, /decisions
      journal_path: elastiscale-journal.jsonl
      journal_max_bytes: 10485760       # rotate past 10 MiB, keeping journal_keep old files
      log_format: json                  # or text
      leader_election:
        enabled: auto                   # on when the actuator is Kubernetes
        lease_name: elastiscale-rag-qa  # default: elastiscale-<pipeline name>
        duration_s: 15
        renew_s: 2
      sharding:                         # several units over replicas (see ShardingConfig)
        enabled: false
        lease_duration_s: 15            # client-go's LeaseDuration, RenewDeadline, RetryPeriod
        renew_deadline_s: 10
        retry_period_s: 2
      gpu_pools: {store: kubernetes}    # GPU pools shared across daemons (a ConfigMap each)

`elastiscale.config.Config` holds one as its `daemon` field, so `elastiscale validate` checks
this section like any other; the daemon (`elastiscale.daemon`) reads it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator, model_validator

#: A Lease name: a DNS subdomain (lower-case letters, digits, '-' and '.').
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

DEFAULT_PORT = 9464


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port` -> (host, port); `[::1]:9464` for IPv6. Raises ValueError naming the value."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:{DEFAULT_PORT})")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{value!r}: port {port} is outside 0..65535")
    return host, port


class LeaderElectionConfig(_Strict):
    """Leader election through a Kubernetes Lease (coordination.k8s.io/v1).

    enabled: `auto` elects a leader when the actuator is Kubernetes (several replicas of the
    sidecar are then safe); `true` always; `false` never (this process always acts).
    lease_name: default `elastiscale-<pipeline name>`.
    namespace: default the Kubernetes actuator's namespace, else $POD_NAMESPACE, else the
    connection's (the pod's own, or the kubeconfig context's).
    duration_s: how long a lease holds without renewal. A follower takes over once it has seen
    the lease unrenewed for this long.
    renew_s: how often the leader renews and a follower retries. The leader stops acting when
    it has not renewed for `duration_s - renew_s`, so it has stopped before any follower can
    take over. Worked example, 15 s and 2 s: a leader cut off from the API stops acting 13 s
    after its last renewal; a follower takes over 15 s after it last saw the lease change.
    identity: this process's name in the lease; default $POD_NAME, else `<host>-<pid>`.
    connection, kubeconfig, context: how to reach the API; default the Kubernetes
    actuator's settings, else `auto` (in-cluster in a pod, else the kubeconfig).
    """

    enabled: bool | Literal["auto"] = "auto"
    lease_name: str | None = None
    namespace: str | None = None
    duration_s: PositiveFloat = 15.0
    renew_s: PositiveFloat = 2.0
    identity: str | None = Field(None, min_length=1, max_length=253)
    connection: Literal["auto", "in-cluster", "kubeconfig"] | None = None
    kubeconfig: str | None = None
    context: str | None = None
    timeout_s: PositiveFloat = Field(5.0, description="longest wait for one Lease call")

    @field_validator("lease_name")
    @classmethod
    def _lease_name_valid(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _DNS_SUBDOMAIN.match(value)):
            raise ValueError(
                f"{value!r} is not a valid Lease name (lower-case letters, digits, '-' and '.')"
            )
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace_valid(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 63 or not _DNS_LABEL.match(value)):
            raise ValueError(
                f"{value!r} is not a valid namespace (lower-case letters, digits, '-')"
            )
        return value

    @model_validator(mode="after")
    def _renew_within_duration(self) -> LeaderElectionConfig:
        # The leader must get at least one retry before it gives up at duration - renew.
        if self.renew_s * 2 >= self.duration_s:
            raise ValueError(
                f"renew_s = {self.renew_s:g} must be less than half of "
                f"duration_s = {self.duration_s:g}"
            )
        return self


class ShardingConfig(_Strict):
    """Sharding several units (pipelines) over daemon replicas through Kubernetes Leases.

    Each replica holds a member Lease (`<name>-member-<identity>`), sees the others by listing
    the fleet's Leases by label, assigns each unit to one live member by rendezvous hashing of
    the unit's name, and acts on a unit only while it holds that unit's Lease
    (`<name>-unit-<unit>`), so no two replicas act on one unit even while their views of the
    members disagree. The timing fields are client-go's leader-election ones:
    lease_duration_s: a Lease unrenewed this long (on the reader's own clock) may be taken over.
    renew_deadline_s: a holder that has not renewed for this long stops acting (before any
    other replica may take over, since it is shorter than the duration).
    retry_period_s: how often Leases are listed, renewed and tried for; at most one control
    tick (a longer one runs as the units' shortest `control.interval_s`).
    A dead replica's units are held again within lease_duration_s + retry_period_s of its death
    (so within lease duration + one tick), and acted on at once.
    name: the fleet's name in Lease names and labels; default the fleet file's `fleet.name`.
    namespace, identity, connection, kubeconfig, context: as in `leader_election` (whose
    values, then the Kubernetes actuator's, are the defaults).
    """

    enabled: bool = False
    name: str | None = None
    lease_duration_s: PositiveFloat = 15.0
    renew_deadline_s: PositiveFloat = 10.0
    retry_period_s: PositiveFloat = 2.0
    timeout_s: PositiveFloat = Field(5.0, description="longest wait for one Lease call")
    namespace: str | None = None
    identity: str | None = Field(None, min_length=1, max_length=253)
    connection: Literal["auto", "in-cluster", "kubeconfig"] | None = None
    kubeconfig: str | None = None
    context: str | None = None

    @field_validator("name")
    @classmethod
    def _name_valid(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 40 or not _DNS_LABEL.match(value)):
            raise ValueError(
                f"{value!r} is not a valid fleet name (lower-case letters, digits, '-'; at most 40)"
            )
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace_valid(cls, value: str | None) -> str | None:
        return LeaderElectionConfig._namespace_valid(value)

    @model_validator(mode="after")
    def _timings_ordered(self) -> ShardingConfig:
        # client-go's checks: LeaseDuration > RenewDeadline > 1.2 x RetryPeriod.
        if self.lease_duration_s <= self.renew_deadline_s:
            raise ValueError(
                f"lease_duration_s = {self.lease_duration_s:g} must be greater than "
                f"renew_deadline_s = {self.renew_deadline_s:g}"
            )
        if self.renew_deadline_s <= 1.2 * self.retry_period_s:
            raise ValueError(
                f"renew_deadline_s = {self.renew_deadline_s:g} must be greater than 1.2 x "
                f"retry_period_s = {self.retry_period_s:g}"
            )
        return self


class GpuPoolsConfig(_Strict):
    """Where the GPU pools named by pipelines (`params.gpu_pool`) keep their state, so that
    pipelines run by several daemons share one budget (`controllers/budget.py` has the rules).

    store: `in-process` (default: pipelines of this process share a pool in its memory) or
    `kubernetes`: one ConfigMap per pool, read-modify-written with resourceVersion.
    namespace: the ConfigMaps' namespace; default the Kubernetes actuator's, else
    $POD_NAMESPACE, else the connection's.
    name_prefix: a pool's ConfigMap is `<name_prefix><pool name>` unless `names` names it.
    names: ConfigMap name per pool name, for pools whose names are not valid object names.
    expiry_s: a member's grants lapse `expiry_s / 2` after its last landed write, and others
    free them after seeing its entry unchanged for `expiry_s`; at least four control
    intervals, so a member applies its fallback before others grow into its GPUs.
    conflict_retries: re-reads after a 409 within one tick before holding the allocation.
    timeout_s: longest wait for one ConfigMap call.
    connection, kubeconfig, context: how to reach the API; default the Kubernetes actuator's
    settings, else `auto`.

        daemon:
          gpu_pools: {store: kubernetes, namespace: serving, expiry_s: 300}
    """

    store: Literal["in-process", "kubernetes"] = "in-process"
    namespace: str | None = None
    name_prefix: str = "elastiscale-gpu-pool-"
    names: dict[str, str] = Field(default_factory=dict)
    expiry_s: PositiveFloat = 300.0
    conflict_retries: int = Field(5, ge=0, le=50)
    timeout_s: PositiveFloat = 5.0
    connection: Literal["auto", "in-cluster", "kubeconfig"] | None = None
    kubeconfig: str | None = None
    context: str | None = None

    @field_validator("namespace")
    @classmethod
    def _pool_namespace_valid(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 63 or not _DNS_LABEL.match(value)):
            raise ValueError(
                f"{value!r} is not a valid namespace (lower-case letters, digits, '-')"
            )
        return value

    @field_validator("names")
    @classmethod
    def _names_valid(cls, value: dict[str, str]) -> dict[str, str]:
        for pool, name in value.items():
            if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
                raise ValueError(
                    f"{pool}: {name!r} is not a valid ConfigMap name "
                    "(lower-case letters, digits, '-' and '.')"
                )
        return value

    def object_name(self, pool: str) -> str:
        """The ConfigMap of pool `pool`."""
        return self.names.get(pool) or f"{self.name_prefix}{pool}"

    def check_pool(self, pool: str) -> str | None:
        """Why pool `pool` has no valid ConfigMap name under this section (None: it has)."""
        name = self.object_name(pool)
        if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            return (
                f"pool {pool!r} makes ConfigMap name {name!r}, not a valid object name; "
                f"set daemon.gpu_pools.names.{pool}"
            )
        return None


class DaemonConfig(_Strict):
    """How the sidecar daemon runs (see the module docstring).

    listen: address of the HTTP endpoints; 127.0.0.1 by default, so nothing outside the host
    sees them unless asked (`0.0.0.0:9464` in a pod, for probes and scraping).
    journal_path: the decision journal (JSON lines), relative to the working directory.
    journal_max_bytes / journal_keep: rotate the journal past this size, keeping this many
    older files (`.1` the newest).
    journal_fsync: force each intent to disk before the change it announces is sent.
    log_format: `text` lines or one JSON object per line.
    metrics_backoff_max_s: longest pause between attempts to reach a metric source that is
    down (the pause doubles from one control interval up to this).
    decisions_kept: how many recent changed decisions `/decisions` serves.
    sharding: several units split over replicas by Leases (`ShardingConfig`).
    gpu_pools: where shared GPU pools keep their state (`GpuPoolsConfig`).
    """

    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    journal_path: str = Field("elastiscale-journal.jsonl", min_length=1)
    journal_max_bytes: int = Field(10 * 1024 * 1024, ge=4096)
    journal_keep: int = Field(3, ge=1, le=100)
    journal_fsync: bool = True
    log_format: Literal["text", "json"] = "text"
    metrics_backoff_max_s: PositiveFloat = 60.0
    decisions_kept: int = Field(1000, ge=1, le=100_000)
    leader_election: LeaderElectionConfig = LeaderElectionConfig()
    sharding: ShardingConfig = ShardingConfig()
    gpu_pools: GpuPoolsConfig = GpuPoolsConfig()

    @field_validator("listen")
    @classmethod
    def _listen_valid(cls, value: str) -> str:
        parse_listen(value)
        return value
