"""SageMaker and Application Auto Scaling failures in the engine's words: an AWS error code
(with its message and HTTP status) as a `Failure`, and a boto3/botocore exception as a
`SageMakerCallError` naming the call."""

from __future__ import annotations

from typing import Any

from elastiscale.adapters.base import Failure

_THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "SlowDown",
    }
)
_FORBIDDEN_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "MissingAuthenticationTokenException",
    }
)
_UNAVAILABLE_CODES = frozenset(
    {"InternalFailure", "InternalError", "InternalServerError", "ServiceUnavailable"}
)


class SageMakerCallError(Exception):
    """A failed SageMaker or Application Auto Scaling call, already classified."""

    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure


def failure_for_error(code: str, message: str, http_status: int | None) -> Failure:
    """The `Failure` an AWS error code (with its message and HTTP status) means.

    SageMaker reports a missing resource as a `ValidationException` "Could not find ..." and a
    change to a resource that is mid-update as a `ValidationException` about an in-progress
    update, so the message decides between NOT_FOUND, IN_PROGRESS and INVALID.
    """
    text = message.lower()
    if code in _THROTTLING_CODES:
        return Failure.THROTTLED
    if code in _FORBIDDEN_CODES:
        return Failure.FORBIDDEN
    if code in ("ResourceNotFound", "ResourceNotFoundException") or (
        code == "ValidationException"
        and ("could not find" in text or "not found" in text or "does not exist" in text)
    ):
        return Failure.NOT_FOUND
    if code == "ResourceInUse" or "in-progress" in text or "in progress" in text:
        return Failure.IN_PROGRESS
    if code == "ConflictException":
        return Failure.CONFLICT
    if code in _UNAVAILABLE_CODES or (http_status is not None and http_status >= 500):
        return Failure.UNAVAILABLE
    return Failure.INVALID


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def classify(exc: Exception, what: str) -> SageMakerCallError:
    """A boto3/botocore exception as a `SageMakerCallError` naming the call."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, ClientError):
        response = exc.response if isinstance(exc.response, dict) else {}
        error = _mapping(response.get("Error"))
        code = str(error.get("Code", "Unknown"))
        message = " ".join(str(error.get("Message", "")).split())
        status = _mapping(response.get("ResponseMetadata")).get("HTTPStatusCode")
        failure = failure_for_error(code, message, status if isinstance(status, int) else None)
        return SageMakerCallError(failure, f"{what}: {code}: {message}")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return SageMakerCallError(Failure.FORBIDDEN, f"{what}: {exc}")
    return SageMakerCallError(Failure.UNAVAILABLE, f"{what}: {exc}")
