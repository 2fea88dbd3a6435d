"""Prometheus: observations read from its HTTP API, and history exported as a trace.

source.py   `PrometheusMetricSource` (the `prometheus` metric source)
promql.py   query templates and their expansion
presets.py  query templates by server (vLLM, Ray Serve, Triton)
http.py     the HTTP client: connection, auth, TLS, retries, errors
history.py  range queries in chunks, written as a trace
cli.py      `elastiscale export-trace`

A throwaway Prometheus for tests is `elastiscale.testing.prometheus.LocalPrometheus`.
"""

from elastiscale.adapters.prometheus.source import PrometheusMetricSource

__all__ = ["PrometheusMetricSource"]
