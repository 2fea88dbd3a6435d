# The elastiscale sidecar image:
#
#   docker build -t elastiscale:0.1.0 .
#   docker run --rm -v "$PWD/examples:/examples:ro" -w / -p 9464:9464 elastiscale:0.1.0 \
#       run /examples/daemon/pipeline.yaml --dry-run
#
# examples/kubernetes/sidecar.yaml runs it as a Deployment; its pipeline file comes from a
# ConfigMap mounted at /etc/elastiscale.

FROM python:3.12-slim AS build
# What the sidecar runs: the Kubernetes actuator and leader election, and the statsmodels
# forecasters of the default policy (holt-winters is one of `auto`'s candidates); no plots, Ray
# or boto3. KEDA mode (deploy/overlays/keda):
#   docker build --build-arg EXTRAS=kubernetes,forecast,keda .
ARG EXTRAS=kubernetes,forecast
WORKDIR /src
COPY pyproject.toml README.md LICENSE MANIFEST.in ./
COPY src ./src
# The wheel, then exactly it and its extras into /install (the only thing the image copies).
# Dropped, as the daemon never imports them: the dependencies' own test suites (numpy, scipy,
# pandas, statsmodels: about 120 MB) and the Kubernetes client's asyncio copy, kubernetes.aio
# (68 MB; the actuator and leader election use the synchronous client, which never imports it:
# tests/test_packaging.py). docs/performance.md, "The sidecar image", measures each step.
RUN pip wheel --no-cache-dir --no-deps -w /wheels . \
 && pip install --no-cache-dir --prefix=/install "$(ls /wheels/elastiscale-*.whl)[${EXTRAS}]" \
 && find /install -depth -type d -name tests -prune -exec rm -rf {} + \
 && rm -rf /install/lib/python*/site-packages/kubernetes/aio

FROM python:3.12-slim
COPY --from=build /install /usr/local
# A fixed non-root user (the sidecar manifest runs as 65532) owning the journal's directory.
RUN groupadd --gid 65532 elastiscale \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin elastiscale \
 && install -d -o 65532 -g 65532 /var/lib/elastiscale
USER 65532:65532
WORKDIR /var/lib/elastiscale
# Inside a container, loopback is unreachable from outside: listen on all of the container's
# interfaces (nothing is published unless `docker run -p` or a pod asks for it).
ENV ELASTISCALE_LISTEN=0.0.0.0:9464 \
    ELASTISCALE_JOURNAL=/var/lib/elastiscale/journal.jsonl \
    PYTHONUNBUFFERED=1
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=3s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)"]
# SIGTERM (docker stop, pod deletion) ends the current tick and exits 0 within 5 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["elastiscale"]
CMD ["run", "/etc/elastiscale/pipeline.yaml"]
