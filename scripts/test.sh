#!/usr/bin/env bash
# Sets everything up (idempotent) and runs the test suite. This is the README's test command,
# and .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
make -s -C shim test
exec .venv/bin/python -m pytest "$@"
