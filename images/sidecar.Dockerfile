# syntax=docker/dockerfile:1
# The sidecar image: revati without vLLM, for `revati sidecar` (the pod's duration predictor,
# LightGBM models trained on profiles/) and its relay to the deployment's coordinator.
#
#   docker build -f images/sidecar.Dockerfile -t ghcr.io/revati-dev/revati-sidecar:0.1.0 .
#
# The relay's fast /proc scanner (librevati_tk.so) comes with the shim: the pods mount the shim
# init image's copy at /opt/revati/shim (REVATI_SHIM_DIR); without it the Timekeeper reads
# /proc from Python (its documented fallback).

FROM python:3.11.14-slim-bookworm AS build
WORKDIR /opt/revati/src
COPY pyproject.toml README.md ./
COPY revati/ revati/
COPY sidecar/ sidecar/
COPY operator/ operator/
# revati itself without its dependencies (no vLLM, no torch), then exactly what the sidecar
# imports, at pyproject.toml's pins (tests/k8s/test_images.py compares them and checks that the
# sidecar runs with nothing else from pyproject.toml installed).
RUN python -m venv .venv \
 && env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null .venv/bin/pip install --no-cache-dir -q --no-deps . \
 && env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null .venv/bin/pip install --no-cache-dir -q --no-warn-conflicts \
      pyzmq==27.3.0 msgpack==1.2.4 lightgbm==4.7.0

FROM python:3.11.14-slim-bookworm
# lightgbm needs the OpenMP runtime.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 revati \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/revati --shell /usr/sbin/nologin revati
COPY --from=build /opt/revati/src/.venv /opt/revati/src/.venv
COPY profiles/ /opt/revati/profiles/
ENV PATH=/opt/revati/src/.venv/bin:$PATH \
    HOME=/home/revati \
    XDG_CACHE_HOME=/home/revati/.cache \
    REVATI_SHIM_DIR=/opt/revati/shim \
    REVATI_PROFILES_DIR=/opt/revati/profiles \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/revati
ENTRYPOINT ["revati"]
CMD ["sidecar", "--help"]
