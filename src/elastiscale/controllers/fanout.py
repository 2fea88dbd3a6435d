"""Fan-out factors measured online: downstream calls per upstream request, per edge.

Downstream demand is known the moment upstream demand is, times the fan-out of the edge between
them. The configured fan-out is a prior; the real one drifts (a new agent prompt makes more LLM
calls, a retriever starts skipping the reranker), so it is measured from the two rates.

The estimate of a ratio is a discounted ratio of sums, with the prior counted as
`prior_requests` upstream requests:

    fanout = (prior x prior_requests + sum(w x downstream calls)) / (prior_requests + sum(w x up))

where every tick adds rate x seconds since the previous tick and older evidence is discounted
with a half-life of `half_life_s`. A ratio of sums weighs busy periods more than quiet ones (a
minute at 20 req/s says more than a minute at 0.2 req/s) and never divides by a near-zero rate.
Worked numbers, prior 3.0 worth 100 requests: after 50 s at 10 req/s upstream and 40 calls/s
downstream (500 requests, 2,000 calls) the estimate is (300 + 2000) / (100 + 500) = 3.83, and
the confidence (evidence / (evidence + prior)) is 500 / 600 = 0.83. With a 120 s half-life a
change of fan-out is half learnt in about 2 minutes and 94% in 8.

One rate cannot tell apart the edges that feed a component with several upstreams (a retriever
called by a planner and by a writer): their calls add up. So the measured quantity is, for each
downstream component, the ratio of its observed rate to the rate the priors predict from its
upstreams' observed rates, and every incoming edge gets its prior times that common factor. For
a component with one upstream this is exactly downstream rate / upstream rate. Components that
also receive external traffic (a second ingress) are not measured: their external share is
unknown, so their edges keep the prior.

Variants of one component (`config.variants`: stable and canary) are measured as the component
they split: the factor compares the variants' summed rate with what the priors predict for all
of them, and the split itself is read from the rates, each variant's share of the summed rate
(a `RatioEstimator` with the file's percent as its prior, worth `SPLIT_PRIOR_CALLS` calls, and
a half-life of `SPLIT_HALF_LIFE_S`, so a split that moved is followed within a few dozen calls
and a couple of minutes even where the component is quiet). An
edge into a variant then has the source's calls into the component times the measured factor
times the variant's measured share, which a variant at 0% in the file also gets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from elastiscale.decision import Detail
from elastiscale.pipeline import Pipeline

#: Below this upstream rate (per second) a tick adds no evidence: a ratio of two near-zero rates
#: is noise, and an idle pipeline has no fan-out to show.
MIN_RATE = 1e-6
#: The file's split counts as this many calls against the measured one (`config.variants`).
SPLIT_PRIOR_CALLS = 10.0
#: Half-life of a split's evidence: the per-variant rates are already averaged over their
#: metric window, and an operator moves a split in steps (Argo Rollouts' setWeight), so the
#: split is followed at about the rates' pace: 94% of a step within 2 minutes.
SPLIT_HALF_LIFE_S = 30.0


@dataclass(slots=True)
class RatioEstimator:
    """A discounted ratio of sums with a prior (see the module docstring).

    `prior` may be None (no prior: the estimate is undefined until evidence arrives).
    """

    prior: float | None
    prior_weight: float
    half_life_s: float
    numerator: float = 0.0
    denominator: float = 0.0
    last_s: float | None = None

    def update(self, now_s: float, numerator_rate: float, denominator_rate: float) -> None:
        """Add `seconds since the last update` of both rates, discounting older evidence."""
        elapsed_s = 0.0 if self.last_s is None else max(0.0, now_s - self.last_s)
        self.last_s = now_s if self.last_s is None else max(self.last_s, now_s)
        if elapsed_s <= 0.0:
            return
        keep = 2.0 ** (-elapsed_s / self.half_life_s)
        self.numerator *= keep
        self.denominator *= keep
        if denominator_rate > MIN_RATE and numerator_rate >= 0.0:
            self.numerator += numerator_rate * elapsed_s
            self.denominator += denominator_rate * elapsed_s

    @property
    def confidence(self) -> float:
        """Evidence / (evidence + prior weight): 0 with no data, towards 1 with much."""
        if self.prior is None:
            return 1.0 if self.denominator > 0 else 0.0
        total = self.denominator + self.prior_weight
        return self.denominator / total if total > 0 else 0.0

    @property
    def value(self) -> float | None:
        """The current estimate, or None without a prior and without evidence."""
        if self.prior is None:
            return self.numerator / self.denominator if self.denominator > 0 else None
        total = self.denominator + self.prior_weight
        if total <= 0:
            return self.prior
        return (self.prior * self.prior_weight + self.numerator) / total


class FanoutEstimator:
    """Measured fan-out of every edge of a pipeline (see the module docstring).

    `update(now_s, rates)` takes each component's observed request rate (None: missing, the
    component adds no evidence this tick). `fanouts()` gives every edge's current estimate,
    ready for `Pipeline.propagate(..., fanout=...)`.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        half_life_s: float,
        prior_requests: float,
        enabled: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self.enabled = enabled
        self._factor: dict[str, RatioEstimator] = {}
        #: variant component -> the components its factor is measured over (all the variants)
        self._group: dict[str, tuple[str, ...]] = {}
        self._share: dict[str, RatioEstimator] = {}
        #: component -> (edge source, prior fan-out, the two detail keys) of its incoming
        #: edges: the keys formatted once, not at every tick.
        self._detail_keys: dict[str, list[tuple[str, float, str, str]]] = {}
        groups: dict[str, list[str]] = {}
        for name in pipeline.order:
            variant = pipeline.components[name].variant
            if variant is not None and pipeline.incoming(name):
                groups.setdefault(variant.of, []).append(name)
        for members in groups.values():
            shared = RatioEstimator(1.0, prior_requests, half_life_s)
            for name in members:
                self._group[name] = tuple(members)
                self._factor[name] = shared
                variant = pipeline.components[name].variant
                assert variant is not None
                self._share[name] = RatioEstimator(
                    variant.percent / 100.0, SPLIT_PRIOR_CALLS, SPLIT_HALF_LIFE_S
                )
        for name in pipeline.order:
            incoming = pipeline.incoming(name)
            if incoming and not pipeline.components[name].ingress and name not in self._group:
                # The factor multiplies the priors, so its own prior is 1.
                self._factor[name] = RatioEstimator(1.0, prior_requests, half_life_s)

    def _expected(self, names: tuple[str, ...], rates: Mapping[str, float | None]) -> float:
        """The rate the priors predict for `names` together (NaN when an upstream is missing)."""
        expected = 0.0
        for name in names:
            for edge in self.pipeline.incoming(name):
                upstream = rates.get(edge.source)
                if upstream is None:
                    return math.nan
                expected += upstream * edge.fanout
        return expected

    def update(self, now_s: float, rates: Mapping[str, float | None]) -> None:
        """Learn from one tick of observed request rates (requests/s per component)."""
        if not self.enabled:
            return
        seen: set[int] = set()
        for name, estimator in self._factor.items():
            if id(estimator) in seen:
                continue  # a split component's factor, updated once for all its variants
            seen.add(id(estimator))
            members = self._group.get(name, (name,))
            got = [rates.get(m) for m in members]
            observed = None if any(r is None for r in got) else sum(r for r in got if r)
            expected = self._expected(members, rates)
            if observed is None or math.isnan(expected):
                # Keep the clock moving so that the gap is not later counted as evidence.
                estimator.update(now_s, 0.0, 0.0)
                for m in members if name in self._group else ():
                    self._share[m].update(now_s, 0.0, 0.0)
                continue
            estimator.update(now_s, observed, expected)
            for m, rate in zip(members, got, strict=True) if name in self._group else ():
                self._share[m].update(now_s, rate or 0.0, observed)

    def factor(self, component: str) -> float:
        """Measured / prior for the edges into `component` (1 where nothing is measured; for
        a variant, the factor of the component it splits)."""
        estimator = self._factor.get(component)
        if estimator is None or not self.enabled:
            return 1.0
        value = estimator.value
        return 1.0 if value is None else value

    def share(self, component: str) -> float | None:
        """A variant's measured share of its component's calls (None: not a variant)."""
        estimator = self._share.get(component)
        if estimator is None:
            return None
        value = estimator.value
        return estimator.prior if value is None or not self.enabled else value

    def confidence(self, component: str) -> float:
        estimator = self._factor.get(component)
        return 0.0 if estimator is None or not self.enabled else estimator.confidence

    def fanouts(self) -> dict[tuple[str, str], float]:
        """Every edge's current fan-out: its prior times its target's measured factor; into a
        variant, the source's calls into the split component times the variant's share."""
        out = {(e.source, e.target): e.fanout * self.factor(e.target) for e in self.pipeline.edges}
        if not self._group:
            return out
        calls: dict[tuple[str, tuple[str, ...]], float] = {}
        for e in self.pipeline.edges:
            if e.target in self._group:
                key = (e.source, self._group[e.target])
                calls[key] = calls.get(key, 0.0) + e.fanout
        for e in self.pipeline.edges:
            share = self.share(e.target)
            if share is not None and self.enabled:
                total = calls[(e.source, self._group[e.target])]
                out[(e.source, e.target)] = total * self.factor(e.target) * share
        return out

    def details(self, component: str) -> dict[str, Detail]:
        """Measured fan-out vs prior of each edge into `component`, for decision records."""
        out: dict[str, Detail] = {}
        fanouts = self.fanouts() if component in self._group else None
        factor = self.factor(component)
        keys = self._detail_keys.get(component)
        if keys is None:
            keys = self._detail_keys[component] = [
                (e.source, e.fanout, f"fanout_{e.source}_prior", f"fanout_{e.source}_measured")
                for e in self.pipeline.incoming(component)
            ]
        for source, prior, prior_key, measured_key in keys:
            out[prior_key] = prior
            measured = prior * factor if fanouts is None else fanouts[(source, component)]
            out[measured_key] = round(measured, 4)
        if self.pipeline.incoming(component):
            out["fanout_confidence"] = round(self.confidence(component), 4)
        share = self.share(component)
        variant = self.pipeline.components[component].variant
        if share is not None and variant is not None:
            out["split_prior_percent"] = variant.percent
            out["split_measured_percent"] = round(100.0 * share, 2)
        return out
