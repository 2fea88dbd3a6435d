"""Query presets for the metric names of common model servers, so a user names a server
instead of writing PromQL.

Each preset maps signals (see `elastiscale.observations.SIGNALS`) to `SignalQuery` templates
and names the label that tells its deployments apart. A signal a server does not expose is
simply absent (the source reports it as missing, "not configured"). Metric names are the
servers' own, as their documentation lists them:

- vLLM (OpenAI-compatible server, `/metrics`): gauges `vllm:num_requests_running`,
  `vllm:num_requests_waiting`, `vllm:gpu_cache_usage_perc` (renamed `vllm:kv_cache_usage_perc`
  in the V1 engine); counters `vllm:request_success_total`, `vllm:prompt_tokens_total`,
  `vllm:generation_tokens_total`; histograms `vllm:e2e_request_latency_seconds`,
  `vllm:time_to_first_token_seconds` (TTFT) and `vllm:time_per_output_token_seconds` (ITL;
  `vllm:inter_token_latency_seconds` in the V1 engine, either is read). Series carry
  `model_name`. vLLM counts finished requests, not arrivals: while queues are steady the two
  rates are equal, and `queue_length` shows when they are not.
- Ray Serve (exported by Ray's metrics agent): counter `ray_serve_handle_request_counter_total`
  (calls made to a deployment through handles, the proxy's included: its arrivals), gauges
  `ray_serve_replica_processing_queries`, `ray_serve_deployment_queued_queries`,
  `ray_serve_deployment_replica_healthy`, histogram
  `ray_serve_deployment_processing_latency_ms` (milliseconds). Series carry `deployment`.
- NVIDIA Triton (`:8002/metrics`): counters `nv_inference_request_success`,
  `nv_inference_request_failure`, `nv_inference_compute_infer_duration_us` (cumulative
  microseconds, so its rate is the mean number of requests executing); gauge
  `nv_inference_pending_request_count`; summary `nv_inference_request_summary_us` (only with
  `--metrics-config summary_latencies=true`; per instance, so the preset takes the highest
  instance's p95). Series carry `model`.

`ready_replicas` counts the server instances that report the model (one series per
instance); `desired_replicas` is the platform's, so no server preset has it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from elastiscale.adapters.prometheus.promql import SignalQuery


@dataclass(frozen=True, slots=True)
class Preset:
    """A server's signal templates and the label that names its deployments."""

    name: str
    label: str
    queries: Mapping[str, SignalQuery]
    description: str


def _rate_sum(metric: str) -> str:
    return f"sum by ($by) (rate({metric}{{$selector}}[$window]))"


def _counter(metric: str) -> SignalQuery:
    """A counter's rate summed per component, dated by the counter's samples."""
    return SignalQuery(_rate_sum(metric), f"{metric}{{$selector}}")


def _gauge(metric: str, by: str = "sum") -> SignalQuery:
    """A gauge aggregated per component (`by`: sum, count...), dated by the gauge's samples."""
    return SignalQuery(f"{by} by ($by) ({metric}{{$selector}})", f"{metric}{{$selector}}")


def _p95(bucket_metric: str, divide_by: float | None = None) -> str:
    expr = (
        f"histogram_quantile(0.95, sum by (le, $by) (rate({bucket_metric}{{$selector}}[$window])))"
    )
    return expr if divide_by is None else f"{expr} / {divide_by:g}"


_VLLM: Final = Preset(
    name="vllm",
    label="model_name",
    description="vLLM OpenAI-compatible server",
    queries=MappingProxyType(
        {
            "demand_rps": _counter("vllm:request_success_total"),
            "tokens_per_s": SignalQuery(
                _rate_sum("vllm:prompt_tokens_total")
                + " + "
                + _rate_sum("vllm:generation_tokens_total"),
                "vllm:generation_tokens_total{$selector}",
            ),
            "in_flight": _gauge("vllm:num_requests_running"),
            "queue_length": _gauge("vllm:num_requests_waiting"),
            "utilization": SignalQuery(
                'avg by ($by) ({__name__=~"vllm:gpu_cache_usage_perc|vllm:kv_cache_usage_perc",'
                "$selector})",
                '{__name__=~"vllm:gpu_cache_usage_perc|vllm:kv_cache_usage_perc",$selector}',
            ),
            "latency_p95_s": SignalQuery(
                _p95("vllm:e2e_request_latency_seconds_bucket"),
                "vllm:e2e_request_latency_seconds_count{$selector}",
            ),
            "ttft_p95_s": SignalQuery(
                _p95("vllm:time_to_first_token_seconds_bucket"),
                "vllm:time_to_first_token_seconds_count{$selector}",
            ),
            "itl_p95_s": SignalQuery(
                "histogram_quantile(0.95, sum by (le, $by) (rate({__name__=~"
                '"vllm:time_per_output_token_seconds_bucket|vllm:inter_token_latency_seconds_bucket"'
                ",$selector}[$window])))",
                '{__name__=~"vllm:time_per_output_token_seconds_count'
                '|vllm:inter_token_latency_seconds_count",$selector}',
            ),
            "ready_replicas": _gauge("vllm:num_requests_running", by="count"),
        }
    ),
)

_RAY_SERVE: Final = Preset(
    name="ray-serve",
    label="deployment",
    description="Ray Serve deployments",
    queries=MappingProxyType(
        {
            "demand_rps": _counter("ray_serve_handle_request_counter_total"),
            "in_flight": _gauge("ray_serve_replica_processing_queries"),
            "queue_length": _gauge("ray_serve_deployment_queued_queries"),
            "latency_p95_s": SignalQuery(
                _p95("ray_serve_deployment_processing_latency_ms_bucket", divide_by=1000),
                "ray_serve_deployment_processing_latency_ms_count{$selector}",
            ),
            "ready_replicas": _gauge("ray_serve_deployment_replica_healthy"),
        }
    ),
)

_TRITON: Final = Preset(
    name="triton",
    label="model",
    description="NVIDIA Triton Inference Server",
    queries=MappingProxyType(
        {
            "demand_rps": SignalQuery(
                "sum by ($by) (rate({__name__=~"
                '"nv_inference_request_success|nv_inference_request_failure",'
                "$selector}[$window]))",
                "nv_inference_request_success{$selector}",
            ),
            "in_flight": SignalQuery(
                "sum by ($by) (rate(nv_inference_compute_infer_duration_us{$selector}[$window]))"
                " / 1e6",
                "nv_inference_compute_infer_duration_us{$selector}",
            ),
            "queue_length": _gauge("nv_inference_pending_request_count"),
            "latency_p95_s": SignalQuery(
                'max by ($by) (nv_inference_request_summary_us{quantile="0.95",$selector}) / 1e6',
                'nv_inference_request_summary_us{quantile="0.95",$selector}',
            ),
            "ready_replicas": _gauge("nv_inference_request_success", by="count"),
        }
    ),
)

#: Presets by name.
PRESETS: Final[Mapping[str, Preset]] = MappingProxyType(
    {p.name: p for p in (_VLLM, _RAY_SERVE, _TRITON)}
)
