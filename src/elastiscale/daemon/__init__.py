"""The sidecar daemon: `elastiscale run`."""
