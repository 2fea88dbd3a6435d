"""SageMaker endpoints on the moto server process, for the chaos suite (through real boto3)."""

from __future__ import annotations

from pathlib import Path

from test_sagemaker import boto_client
from test_sagemaker import create_endpoint as _create_endpoint

REGION = "us-east-1"


def sagemaker_env(workdir: Path) -> dict[str, str]:
    """Dummy credentials and no user AWS files, so nothing can reach a real account."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(workdir / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "aws-credentials"),
    }


def create_endpoint(url: str, name: str) -> None:
    _create_endpoint(url, name, instances=1)


def instance_count(url: str, name: str) -> int:
    variant = boto_client("sagemaker", url).describe_endpoint(EndpointName=name)[
        "ProductionVariants"
    ][0]
    return int(variant["DesiredInstanceCount"])
