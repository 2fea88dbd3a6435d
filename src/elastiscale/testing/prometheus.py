"""A throwaway Prometheus on 127.0.0.1, for tests and benchmarks of Prometheus integrations,
and `MetricsEndpoint`, a prometheus-client registry served for it to scrape.

`LocalPrometheus` runs the `prometheus` binary with its own free port, data directory and
config (never the system service's), loads recorded history before it starts, scrapes targets
listed at run time through file-based discovery, is stopped by its PID, and dies with the
process that started it when that one is killed before stopping it (`testing/lifetime.py`):

    with LocalPrometheus(tmp_dir, history=[write_openmetrics(tmp_dir / "h.om", families)]) as prom:
        prom.set_targets({"127.0.0.1:8000": {"component": "llm"}})
        ... query prom.url ...

History goes through `promtool tsdb create-blocks-from openmetrics` (timestamps in seconds,
samples in time order per series, the file ending in `# EOF`); blocks are at most 2 h long.
Retention is 100 years so old history is not deleted at start.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
import numpy.typing as npt
import requests
from prometheus_client import CollectorRegistry, make_wsgi_app
from urllib3.exceptions import InsecureRequestWarning

from elastiscale.testing.lifetime import die_with_parent


def free_port(avoid: Collection[int] = ()) -> int:
    """A TCP port free on 127.0.0.1 at the time of asking, none of `avoid` (ports another
    server will take later, such as a local Ray's fixed defaults)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            return port


# --------------------------------------------------------------------------------------------
# History as OpenMetrics


@dataclass(frozen=True)
class Series:
    """One series of a family: its labels and samples (times in Unix seconds, ascending)."""

    labels: Mapping[str, str]
    times_s: npt.ArrayLike
    values: npt.ArrayLike


@dataclass(frozen=True)
class Family:
    """A metric family. For a counter, samples are written as `<name>_total`."""

    name: str
    kind: Literal["gauge", "counter"]
    series: Sequence[Series] = field(default_factory=list)
    help: str = ""


def _om_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _om_labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    escaped = (
        (k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
        for k, v in sorted(labels.items())
    )
    return "{" + ",".join(f'{k}="{v}"' for k, v in escaped) + "}"


def write_openmetrics(path: str | Path, families: Iterable[Family]) -> Path:
    """Write `families` as an OpenMetrics text file that promtool can turn into blocks."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as out:
        for family in families:
            out.write(f"# HELP {family.name} {family.help or family.name}\n")
            out.write(f"# TYPE {family.name} {family.kind}\n")
            sample = f"{family.name}_total" if family.kind == "counter" else family.name
            for series in family.series:
                head = sample + _om_labels(series.labels)
                times = np.asarray(series.times_s, dtype=float)
                values = np.asarray(series.values, dtype=float)
                if times.shape != values.shape:
                    raise ValueError(f"{family.name}: times and values differ in length")
                if times.size > 1 and np.any(np.diff(times) <= 0):
                    raise ValueError(f"{family.name}: sample times must increase")
                out.writelines(
                    f"{head} {_om_value(float(v))} {_om_value(float(t))}\n"
                    for t, v in zip(times, values, strict=True)
                )
        out.write("# EOF\n")
    return path


# --------------------------------------------------------------------------------------------
# The server


class LocalPrometheus:
    """One Prometheus process with its own port and data directory under `workdir`."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        history: Sequence[Path] = (),
        scrape_interval_s: float = 1.0,
        port: int | None = None,
        binary: str = "prometheus",
        promtool: str = "promtool",
        web_config: Mapping[str, Any] | None = None,
        probe_auth: tuple[str, str] | None = None,
    ) -> None:
        """`web_config` is Prometheus's own web configuration (`tls_server_config`,
        `basic_auth_users` with bcrypt hashes); `probe_auth` is the user and password the
        readiness probe then needs."""
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "prometheus.yml"
        self.targets_path = self.workdir / "targets.json"
        self.log_path = self.workdir / "prometheus.log"
        self.history = list(history)
        self.scrape_interval_s = scrape_interval_s
        self._fixed_port = port
        self.port = port or 0
        self.binary = shutil.which(binary) or binary
        self.promtool = shutil.which(promtool) or promtool
        self._promtool_blocks = [self.promtool, "tsdb", "create-blocks-from", "openmetrics", "-q"]
        self.web_config = dict(web_config) if web_config is not None else None
        self.web_config_path = self.workdir / "web.yml"
        self.probe_auth = probe_auth
        self._process: subprocess.Popen[bytes] | None = None
        self._history_loaded = False

    @property
    def url(self) -> str:
        """The server's base URL (https with a TLS web config)."""
        tls = self.web_config is not None and "tls_server_config" in self.web_config
        return f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process's PID while one was started and not stopped."""
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        """Whether the process is alive (a paused one counts)."""
        return self._process is not None and self._process.poll() is None

    # ----------------------------------------------------------------------------------------

    def _write_config(self) -> None:
        interval = f"{max(1, round(self.scrape_interval_s * 1000))}ms"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval},
            "scrape_configs": [
                {
                    "job_name": "targets",
                    "file_sd_configs": [
                        {"files": [str(self.targets_path)], "refresh_interval": "1s"}
                    ],
                }
            ],
        }
        # JSON is YAML, so no YAML writer is needed.
        self.config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        if self.web_config is not None:
            self.web_config_path.write_text(json.dumps(self.web_config), encoding="utf-8")
        if not self.targets_path.exists():
            self.set_targets({})

    def load_history(self) -> None:
        """Turn the history files into blocks in the data directory (once, before start)."""
        if self._history_loaded:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for path in self.history:
            done = subprocess.run(
                [*self._promtool_blocks, str(path), str(self.data_dir)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"promtool failed on {path}: {done.stderr.strip()[-500:]}")
        self._history_loaded = True

    def set_targets(self, targets: Mapping[str, Mapping[str, str]]) -> None:
        """Scrape exactly these `host:port` targets, each with its extra labels."""
        groups = [
            {"targets": [address], "labels": dict(labels)} for address, labels in targets.items()
        ]
        tmp = self.targets_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups), encoding="utf-8")
        os.replace(tmp, self.targets_path)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the process and wait until `/-/ready` answers; RuntimeError with the log's
        tail when it exits or is not ready within `timeout_s`."""
        if self.running():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self.load_history()
        # A restart keeps its port, so clients configured with `url` reconnect.
        keep_port = self._fixed_port is not None or self.port != 0
        for _attempt in range(1 if keep_port else 3):
            if not keep_port:
                self.port = free_port()
            command = [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=100y",
                "--log.level=warn",
            ]
            if self.web_config is not None:
                command.append(f"--web.config.file={self.web_config_path}")
            log = self.log_path.open("ab")
            # Its own session (a Ctrl-C reaches the test first, which stops it in order), and
            # killed by the kernel when the test process dies without stopping it.
            self._process = subprocess.Popen(
                die_with_parent(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            log.close()
            if self._wait_ready(timeout_s):
                return
            self.stop()
            if "address already in use" not in self._log_tail():
                break
        raise RuntimeError(f"prometheus did not become ready: {self._log_tail()}")

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                # Our own server: its certificate need not be checked to see that it is up.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", InsecureRequestWarning)
                    probe = requests.get(
                        f"{self.url}/-/ready", timeout=1.0, verify=False, auth=self.probe_auth
                    )
                if probe.status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        return False

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-800:].strip()
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the process by its PID (SIGTERM, then SIGKILL after `timeout_s`)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self.resume()
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout_s)
        self._process = None

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections are accepted but never answered."""
        if self.running() and self._process is not None:
            os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused process run again (SIGCONT)."""
        if self.running() and self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# Something to scrape


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsEndpoint:
    """A prometheus-client `registry` served on 127.0.0.1 (`address` is host:port).

    It always answers in the classic text format: prometheus-client's OpenMetrics output
    rewrites `:` in metric names (`vllm:x` becomes `vllm_x`), while model servers are scraped
    as `vllm:x`. Setting `down` makes it answer 503, so Prometheus marks its series stale.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.down = False
        app = make_wsgi_app(self.registry)

        def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if self.down:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"down\n"]
            environ.pop("HTTP_ACCEPT", None)
            answer: Iterable[bytes] = app(environ, start_response)
            return answer

        self._server: WSGIServer = make_server("127.0.0.1", 0, serve, handler_class=_QuietHandler)
        self.address = f"127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
