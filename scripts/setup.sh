#!/usr/bin/env bash
# Sets up everything on a fresh machine, idempotently: the virtual environment at .venv,
# the project and its pinned dependencies (editable), and the shim built from source.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv

# NOTE: these machines set PIP_FIND_LINKS and a pip.conf that offer a CPU-only torch wheel,
# which would satisfy vllm's torch pin and leave nothing to intercept. Install from the
# package index alone, so torch is the CUDA 13 build.
pip_install() { env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null .venv/bin/pip install -q "$@"; }
pip_install -e '.[test]'

.venv/bin/python - <<'PY'
import sys, torch
if not torch.version.cuda:
    sys.exit(f"torch {torch.__version__} is a CPU-only build; remove .venv and rerun scripts/setup.sh")
PY

make -s -C shim
echo "setup done: .venv/bin/revati and shim/build/lib/librevati_shim.so are ready"
