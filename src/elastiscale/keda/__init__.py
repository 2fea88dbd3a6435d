"""KEDA's external scaler served by the daemon: `elastiscale run CONFIG --keda-listen HOST:PORT`.

KEDA asks, elastiscale answers with the replica count it decided, and KEDA's HPA applies it. A
ScaledObject's trigger of type `external` (or `external-push`) names the pipeline component in
its metadata (`component: llm`); see examples/keda/.

- `board.DesiredReplicas`: the counts last decided, shared by the run loop and the server;
- `scaler.ExternalScaler`: the four calls of `externalscaler.ExternalScaler`;
- `server.KedaServer`: the gRPC server (needs the `keda` extra, grpcio);
- `actuator.KedaActuator`: the actuator of this mode, which publishes instead of acting.

The modules `externalscaler_pb2*` are generated from `externalscaler.proto` (the command that
regenerates them is in that file).
"""
