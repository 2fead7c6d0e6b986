#!/usr/bin/env bash
# Benchmark: the time warp's costs. Clock read and launch-path cost with the warp off and on,
# then jumps per second and virtual seconds per wall second with 0, 6 and 24 ticking threads.
# Reproduce with: benchmarks/timewarp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
make -s -C shim
mkdir -p shim/build/bench
gcc -O2 -std=gnu11 -I"$SITE/nvidia/cu13/include" benchmarks/timewarp_clock.c -o shim/build/bench/timewarp_clock \
  -L shim/build/lib -lcuda -Wl,-rpath,"$PWD/shim/build/lib"
echo "command: benchmarks/timewarp.sh   (host: $(nproc) cores, $(uname -m), load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "--- time warp off (REVATI_TIMEWARP unset)"
.venv/bin/revati exec --no-timewarp --predictor constant:1ms -- shim/build/bench/timewarp_clock 2>/dev/null
echo "--- time warp on"
.venv/bin/revati exec --timewarp --predictor constant:1ms -- shim/build/bench/timewarp_clock 2>&1 | grep -v "^revati: [0-9]"
for n in 0 6 24; do
  echo "--- $n threads ticking every 10 ms (virtual), main thread sleeps 2 virtual s"
  .venv/bin/revati exec --timewarp --predictor constant:1ms -- .venv/bin/python benchmarks/timewarp_tickers.py "$n" 2>&1 \
    | grep -E "tickers|virtual s per wall"
done
