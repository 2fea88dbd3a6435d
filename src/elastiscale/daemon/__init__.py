"""The sidecar daemon: `elastiscale run CONFIG.yaml` (see docs/daemon.md).

cli.py        the `run` subcommand: flags, exit codes
runner.py     the run loop: clock, ticks, signals, reloads (`Daemon`)
runtime.py    what one config builds: adapters and the engine over them
guards.py     the source and actuator as the loop wraps them: backoff, journaling
journal.py    the decision journal (JSON lines, rotated) and changes left in flight
leader.py     leader election on a Kubernetes Lease
status.py     state shared with the HTTP threads: readiness, liveness, decisions
telemetry.py  Prometheus metrics in the daemon's own registry
http.py       /healthz, /readyz, /metrics, /decisions
logs.py       text or JSON logs, secrets redacted
"""
