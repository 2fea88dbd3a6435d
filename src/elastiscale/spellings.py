"""The names users already know: HPA, KEDA and Ray Serve spellings, accepted or answered.

One concept, one name across the pipeline file and policy parameters:

- a direction's stabilization window: `stabilization_window_s`; also `stabilization_s`
  (older) and `stabilizationWindowSeconds` (HPA);
- which rate limit wins: `select_policy`; also `select` (older) and `selectPolicy` (HPA);
- a direction's rate limits: `rate_limits`; also `policies` (HPA, and the hpa policy's older
  name);
- a rate limit's period: `period_s`; also `periodSeconds` (HPA);
- the two directions: `scale_up`, `scale_down`; also `scaleUp`, `scaleDown` (HPA).

HPA's values `Max`/`Min`/`Disabled` and `Pods`/`Percent` are accepted in any case. A key that
belongs elsewhere in elastiscale (`minReplicas`, a pasted `autoscaling_config`, KEDA's
`cooldownPeriod`) is refused with a one-line hint naming the elastiscale field (`hint_for`).
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import AliasChoices

STABILIZATION: Final = AliasChoices(
    "stabilization_window_s", "stabilization_s", "stabilizationWindowSeconds"
)
SELECT_POLICY: Final = AliasChoices("select_policy", "select", "selectPolicy")
RATE_LIMITS: Final = AliasChoices("rate_limits", "policies")
PERIOD: Final = AliasChoices("period_s", "periodSeconds")
SCALE_UP: Final = AliasChoices("scale_up", "scaleUp")
SCALE_DOWN: Final = AliasChoices("scale_down", "scaleDown")

_REPLICAS = "set the component's replicas: {min, max, initial} (pipeline.components.NAME.replicas)"
#: Keys refused where they are found, with where their concept lives in elastiscale.
HINTS: Final[dict[str, str]] = {
    "behavior": "HPA's behavior goes under `constraints:` (scale_up / scale_down take HPA's "
    "spellings) or under the hpa policy's params.behavior",
    "autoscaling_config": "Ray Serve's autoscaling_config: bounds go in the component's "
    "replicas (min, max, initial), the rest in the ray-serve policy's params "
    "(or run `elastiscale import`)",
    "min_replicas": _REPLICAS,
    "max_replicas": _REPLICAS,
    "initial_replicas": _REPLICAS,
    "minReplicas": _REPLICAS,
    "maxReplicas": _REPLICAS,
    "minReplicaCount": _REPLICAS,
    "maxReplicaCount": _REPLICAS,
    "num_replicas": _REPLICAS,
    "cooldownPeriod": "KEDA's cooldownPeriod: constraints.scale_down.cooldown_s",
    "pollingInterval": "KEDA's pollingInterval: control.interval_s",
    "fallback": "KEDA's fallback: constraints.missing_data (fallback_after, fallback, "
    "fallback_replicas)",
    "triggers": "KEDA's triggers: the component's demand comes from `metrics:`; run "
    "`elastiscale import` to carry a ScaledObject over",
    "scaleTargetRef": "the workload goes in the actuator's targets (actuator.targets.NAME)",
    "metrics_interval_s": "not used: elastiscale reads metrics every control.interval_s",
    "canaryTrafficPercent": "KServe's canaryTrafficPercent: give the component `variants:`, "
    "each with its percent (variants: {stable: {percent: 90}, canary: {percent: 10}})",
    "traffic": "a traffic split goes in the component's `variants:`, each with its percent",
    "target_ongoing_requests": "a ray-serve policy parameter (policies: [{name: ray-serve, "
    "params: {target_ongoing_requests: ...}}])",
}


def hint_for(key: object) -> str | None:
    """Where `key`'s concept lives in elastiscale, or None when it is simply unknown."""
    return HINTS.get(key) if isinstance(key, str) else None


def lower(value: Any) -> Any:
    """HPA's capitalized enum values (`Max`, `Pods`) as elastiscale's (`max`, `pods`)."""
    return value.lower() if isinstance(value, str) else value
