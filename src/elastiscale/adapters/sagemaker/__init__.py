"""Amazon SageMaker: endpoint variants and inference components scaled through boto3.

actuator.py  `SageMakerActuator` (the `sagemaker` actuator; needs the `sagemaker` extra)

The fake SageMaker API for tests is `elastiscale.testing.sagemaker.FakeSageMaker`.
"""

from elastiscale.adapters.sagemaker.actuator import SageMakerActuator

__all__ = ["SageMakerActuator"]
