#!/usr/bin/env bash
# Benchmark: the shim's interception overhead per kernel launch (ns), for the three launch
# paths. Reproduce with: benchmarks/launch_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
make -s -C shim
mkdir -p shim/build/bench
gcc -O2 -std=gnu11 -I"$SITE/nvidia/cu13/include" benchmarks/launch_overhead.c -o shim/build/bench/launch_overhead \
  -L shim/build/lib -lcuda -Wl,-rpath,"$PWD/shim/build/lib"
echo "command: benchmarks/launch_overhead.sh   (host: $(nproc) cores, $(uname -m))"
LD_PRELOAD="$PWD/shim/build/lib/librevati_shim.so" shim/build/bench/launch_overhead
