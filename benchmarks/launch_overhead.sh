#!/usr/bin/env bash
# Benchmark: the shim's interception overhead per launch (ns) on each launch path, first with
# the built-in roofline source, then with the trained predictor behind the shim's signature
# cache (every launch after the first is a cache hit: the difference is the hit's cost).
# Reproduce with: benchmarks/launch_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
make -s -C shim
mkdir -p shim/build/bench
gcc -O2 -std=gnu11 -I"$SITE/nvidia/cu13/include" benchmarks/launch_overhead.c -o shim/build/bench/launch_overhead \
  -L shim/build/lib -lcuda -Wl,-rpath,"$PWD/shim/build/lib"
echo "command: benchmarks/launch_overhead.sh   (host: $(nproc) cores, $(uname -m))"
SHIM="$PWD/shim/build/lib/librevati_shim.so"
echo "--- duration source: roofline"
REVATI_PREDICTOR=roofline LD_PRELOAD="$SHIM" shim/build/bench/launch_overhead
tmp=$(mktemp -d)
.venv/bin/revati sidecar --endpoint "ipc://$tmp/s.sock" --gpu h100-sxm > "$tmp/sidecar.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
.venv/bin/python - "$tmp" <<'PY'
import sys, time
from revati.sidecar import SidecarClient
for _ in range(200):
    try:
        with SidecarClient(f"ipc://{sys.argv[1]}/s.sock", timeout_s=1) as c:
            c.hello("h100-sxm"); break
    except Exception:
        time.sleep(0.3)
PY
echo "--- duration source: sidecar (trained predictor; all but the first launch hit the shim's cache)"
REVATI_SIDECAR="ipc://$tmp/s.sock" REVATI_ZMQ_LIB=$(.venv/bin/python -c "from revati.launch.sidecar import zmq_library; print(zmq_library())") \
  LD_PRELOAD="$SHIM" shim/build/bench/launch_overhead
