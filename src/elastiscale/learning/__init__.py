"""Online estimators of what a pipeline's file only states: start-up times (`startup.py`),
capacity per replica and service time (`kalman.py`, `service.py`). Each keeps the configured
value as its prior and a confidence that gates its use; a missing or NaN metric never moves an
estimate. They know nothing of policies: `controllers.learned` feeds them from a tick."""

from elastiscale.learning.kalman import ScalarKalman
from elastiscale.learning.service import ServiceEstimator, ServiceSample
from elastiscale.learning.startup import ReadinessTracker, StartupEstimator

__all__ = [
    "ReadinessTracker",
    "ScalarKalman",
    "ServiceEstimator",
    "ServiceSample",
    "StartupEstimator",
]
