# syntax=docker/dockerfile:1
# The runtime image: the real vLLM serving stack + revati + the interception library (shim).
# It runs every process of an emulated deployment: `revati coordinator`, and the engine, router
# and load generator of `revati role ...`. No GPU, no CUDA driver: the shim stands in for them.
#
#   docker build -f images/runtime.Dockerfile -t ghcr.io/revati-dev/revati-runtime:0.1.0 .
#
# One image per engine version: ENGINE_VERSION (empty: the default, pyproject.toml's vLLM) adds
# that version of ENGINE_NAME (default vllm) as its own environment under /opt/revati/engines
# (revati/engines/environments.py, about 8 GB more), and the operator runs it for specs of that
# engine and version (tag suffix -<engine><version>, manifests.Images.runtime_for):
#
#   docker build -f images/runtime.Dockerfile --build-arg ENGINE_VERSION=0.15.1 \
#     -t ghcr.io/revati-dev/revati-runtime:0.1.0-vllm0.15.1 .
#   docker build -f images/runtime.Dockerfile --build-arg ENGINE_NAME=sglang --build-arg ENGINE_VERSION=0.5.23 \
#     -t ghcr.io/revati-dev/revati-runtime:0.1.0-sglang0.5.23 .
#
# The build stage is the same, line for line, as in shim.Dockerfile (tests/k8s/test_images.py
# checks it), so a builder with a layer cache builds it once for both images.

FROM python:3.11.14-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# gcc and make build the shim; its CUDA, NCCL and NVML headers come from the NVIDIA wheels
# that vllm's torch installs into the virtual environment (no CUDA toolkit).
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/revati/src
COPY pyproject.toml README.md ./
COPY revati/ revati/
COPY sidecar/ sidecar/
COPY operator/ operator/
COPY shim/ shim/
# The project's own install (scripts/setup.sh), not editable and without the test extra: every
# pinned version comes from pyproject.toml. PIP_FIND_LINKS and pip.conf are left out as in
# setup.sh, so torch is the CUDA 13 build from the index (a CPU-only torch would leave nothing
# to intercept); the check after it is setup.sh's.
RUN python -m venv .venv \
 && env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null .venv/bin/pip install --no-cache-dir -q . \
 && .venv/bin/python -c "import sys, torch; sys.exit(None if torch.version.cuda else 'torch is a CPU-only build')"
# The shim, built from source with setup.sh's command (the Makefile finds ../.venv/bin/python).
RUN make -s -C shim

# Another engine version: its own environment, with its CUDA torch checked (revati engines install).
FROM python:3.11.14-slim-bookworm AS engines
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=build /opt/revati/src /opt/revati/src
WORKDIR /opt/revati/src
ARG ENGINE_NAME=vllm
ARG ENGINE_VERSION=""
RUN mkdir -p /opt/revati/engines \
 && if [ -n "$ENGINE_VERSION" ]; then \
      REVATI_ENGINES_DIR=/opt/revati/engines REVATI_ENGINE_SOURCE=/opt/revati/src \
        .venv/bin/revati engines install "$ENGINE_NAME" "$ENGINE_VERSION"; \
    fi

FROM python:3.11.14-slim-bookworm
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Triton compiles its small C launcher with gcc when vLLM builds its graphs; lightgbm (the
# predictor) needs the OpenMP runtime.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 revati \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/revati --shell /usr/sbin/nologin revati
COPY --from=build /opt/revati/src/.venv /opt/revati/src/.venv
COPY --from=build /opt/revati/src/shim/build/lib/ /opt/revati/shim/
COPY --from=engines /opt/revati/engines/ /opt/revati/engines/
COPY profiles/ /opt/revati/profiles/
# Caches go under /home/revati/.cache and /tmp (emptyDirs in the pods: the root filesystem is read-only).
ENV PATH=/opt/revati/src/.venv/bin:$PATH \
    HOME=/home/revati \
    XDG_CACHE_HOME=/home/revati/.cache \
    TRITON_HOME=/home/revati/.cache \
    TRITON_CACHE_DIR=/home/revati/.cache/triton \
    MPLCONFIGDIR=/tmp/matplotlib \
    REVATI_SHIM_DIR=/opt/revati/shim \
    REVATI_ENGINES_DIR=/opt/revati/engines \
    REVATI_PROFILES_DIR=/opt/revati/profiles \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/revati
ENTRYPOINT ["revati"]
CMD ["--help"]
