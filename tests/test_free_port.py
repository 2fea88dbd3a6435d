"""`free_port` skips the ports it is told another server will take (a local Ray's defaults)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from elastiscale.testing.prometheus import free_port
from elastiscale.testing.ray_serve import RAY_DEFAULT_PORTS


class _Socket:
    """A socket whose ephemeral ports are handed out from a list."""

    ports: Iterator[int] = iter(())

    def __init__(self, *args: Any) -> None:
        self._port = 0

    def __enter__(self) -> _Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        self._port = next(_Socket.ports)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self._port)


@pytest.mark.parametrize(
    ("handed_out", "avoid", "want"),
    [
        ([52365, 41000], RAY_DEFAULT_PORTS, 41000),  # the dashboard agent's default: skipped
        ([8265, 6379, 41001], RAY_DEFAULT_PORTS, 41001),
        ([52365], (), 52365),  # nothing to avoid: the first port
    ],
)
def test_free_port_skips_the_ports_to_avoid(
    monkeypatch: pytest.MonkeyPatch, handed_out: list[int], avoid: frozenset[int], want: int
) -> None:
    _Socket.ports = iter(handed_out)
    monkeypatch.setattr(socket, "socket", _Socket)  # prometheus.py calls socket.socket
    assert free_port(avoid) == want


def test_a_real_free_port_can_be_bound() -> None:
    port = free_port(RAY_DEFAULT_PORTS)
    assert port not in RAY_DEFAULT_PORTS
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
