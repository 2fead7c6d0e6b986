#!/usr/bin/env bash
# Sets everything up (idempotent) and runs the test suite. This is the README's test command,
# and .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The engine versions whose smoke is asked for (REVATI_ENGINE_SMOKE, .ci/run names 0.15.1) are
# installed before pytest collects: the CUDA 12 checks (tests/shim/test_cuda12.py) decide at
# collection whether 0.15.1's environment is there. Nothing is installed when it is unset.
for v in ${REVATI_ENGINE_SMOKE//,/ }; do
    .venv/bin/revati engines install vllm "$v"
done
make -s -C shim test
exec .venv/bin/python -m pytest "$@"
