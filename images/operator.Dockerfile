# syntax=docker/dockerfile:1
# The operator image: kopf + revati.operator (and revati.spec, which it validates specs with).
#
#   docker build -f images/operator.Dockerfile -t ghcr.io/revati-dev/revati-operator:0.1.0 .

FROM python:3.11.14-slim-bookworm AS build
WORKDIR /opt/revati/src
COPY pyproject.toml README.md ./
COPY revati/ revati/
COPY sidecar/ sidecar/
COPY operator/ operator/
# revati itself without its dependencies (no vLLM, no torch), then exactly what the operator
# imports, at pyproject.toml's pins (tests/k8s/test_images.py compares them and checks that the
# operator's modules import with nothing else from pyproject.toml installed).
RUN python -m venv .venv \
 && env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null .venv/bin/pip install --no-cache-dir -q --no-deps . \
 && env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null .venv/bin/pip install --no-cache-dir -q --no-warn-conflicts \
      kopf==1.45.2 kubernetes==37.0.2 pydantic==2.14.3 PyYAML==6.0.3

FROM python:3.11.14-slim-bookworm
RUN groupadd --gid 10001 revati \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/revati --shell /usr/sbin/nologin revati
COPY --from=build /opt/revati/src/.venv /opt/revati/src/.venv
ENV PATH=/opt/revati/src/.venv/bin:$PATH \
    HOME=/home/revati \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/revati
EXPOSE 8080
# The chart passes the namespaces to watch (--namespace ... or --all-namespaces).
ENTRYPOINT ["kopf"]
CMD ["run", "--standalone", "-m", "revati.operator.handlers", "--liveness=http://0.0.0.0:8080/healthz"]
