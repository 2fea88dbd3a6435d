"""Ray Serve: deployments scaled through the dashboard's REST API, or from inside Serve.

actuator.py  `RayServeActuator` (the `ray-serve` actuator)
policy.py    `ElastiscaleApplicationPolicy`, an application-level autoscaling policy that Serve
             runs itself (`policy_function: elastiscale.adapters.ray.policy:...`)

The fake Serve REST API for tests is `elastiscale.testing.ray_serve.FakeServeDashboard`.
"""
