"""`elastiscale import FILE... --out pipeline.yaml`: the autoscaler a team runs today, as a
pipeline file whose `hpa` or `ray-serve` policy reproduces it.

- `model`: what one imported autoscaler carries (`ImportedComponent`) and the refusal error;
- `kube`: Kubernetes HorizontalPodAutoscalers (autoscaling/v2, with `behavior`);
- `keda`: KEDA ScaledObjects (triggers, bounds, fallback, the advanced HPA behavior);
- `ray_serve`: Ray Serve configs (`autoscaling_config` per deployment);
- `writer`: the pipeline file, laid over an optional base pipeline, validated before writing;
- `cli`: the command.

Whatever a source holds that elastiscale cannot reproduce is named in a note, one line each.
"""
