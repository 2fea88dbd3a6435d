"""The gRPC server of KEDA mode, on its own threads beside the run loop.

grpcio is the optional extra `keda`; without it `KedaServer` raises `MissingExtraError` naming
it. Plain text gRPC (KEDA's `scalerAddress` without TLS); put it behind a cluster-internal
Service, as the deploy/ KEDA overlay does.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from elastiscale.config.daemon import parse_listen
from elastiscale.extras import require
from elastiscale.keda.board import DesiredReplicas

log = logging.getLogger("elastiscale.keda")

#: Worker threads: each open StreamIsActive call holds one, unary calls are short.
MAX_WORKERS: Final = 16


class KedaServer:
    """Serves `externalscaler.ExternalScaler` for `board` on `listen` (host:port; port 0 picks
    a free one, see `port` after `start`)."""

    def __init__(self, listen: str, board: DesiredReplicas, pipeline_name: str) -> None:
        require("grpc", "keda", "elastiscale run --keda-listen")
        self.host, self.requested_port = parse_listen(listen)
        self.board = board
        self.pipeline_name = pipeline_name
        self.port: int | None = None
        self._server: Any = None
        self._scaler: Any = None

    def start(self) -> None:
        """Bind and serve; raises OSError when the address cannot be bound."""
        import grpc

        from elastiscale.keda import externalscaler_pb2_grpc as pb_grpc
        from elastiscale.keda.scaler import ExternalScaler

        self._scaler = ExternalScaler(self.board, self.pipeline_name)
        server = grpc.server(ThreadPoolExecutor(max_workers=MAX_WORKERS))
        pb_grpc.add_ExternalScalerServicer_to_server(self._scaler, server)  # type: ignore[no-untyped-call]
        address = f"{self.host}:{self.requested_port}"
        if ":" in self.host:
            address = f"[{self.host}]:{self.requested_port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio raises RuntimeError when it cannot bind
            raise OSError(f"--keda-listen {address}: cannot bind ({exc})") from None
        if port == 0:
            raise OSError(f"--keda-listen {address}: cannot bind")
        server.start()
        self._server, self.port = server, port
        log.info("serving KEDA's external scaler on %s:%d", self.host, port)

    def stop(self, grace_s: float = 1.0) -> None:
        if self._scaler is not None:
            self._scaler.stopping.set()
        if self._server is not None:
            self._server.stop(grace_s).wait()
            self._server = None
