# syntax=docker/dockerfile:1
# The shim init image: only /opt/revati/shim (librevati_shim.so, its libcuda/libnvidia-ml names
# and librevati_tk.so). Each emulated pod's init container copies it into an emptyDir:
#   cp -a /opt/revati/shim/. /shim/
#
#   docker build -f images/shim.Dockerfile -t ghcr.io/revati-dev/revati-shim:0.1.0 .
#
# The build stage is the same, line for line, as in runtime.Dockerfile (tests/k8s/test_images.py
# checks it): the shim's headers come from the NVIDIA wheels of the project's own install.

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

# The same base as the other images (its layers are shared); cp is all the init container runs.
FROM python:3.11.14-slim-bookworm
RUN groupadd --gid 10001 revati \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin revati
COPY --from=build /opt/revati/src/shim/build/lib/ /opt/revati/shim/
USER 10001:10001
CMD ["cp", "-a", "/opt/revati/shim/.", "/shim/"]
