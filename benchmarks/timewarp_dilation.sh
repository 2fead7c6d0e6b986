#!/usr/bin/env bash
# Benchmark: how the virtual time of a CPU + GPU loop (100 x: ~2 ms of Python, 10 GPU ops of
# 1 ms, a sync) moves with --dilation, with host load (0 vs 2 busy cores) and with the
# contention governor on (compensate, the default) or off (count). Virtual time is 1.000 s of
# GPU plus the loop's CPU time / dilation; counted, the time it queues for a core is added.
# Reproduce with: benchmarks/timewarp_dilation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "command: benchmarks/timewarp_dilation.sh   (host: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
run() {
  .venv/bin/revati exec --dilation "$1" --host-contention "$2" --predictor constant:1ms -- \
    .venv/bin/python benchmarks/timewarp_dilation_work.py 2>/dev/null
}
for busy in 0 2; do
  pids=()
  for _ in $(seq 1 "$busy"); do (while :; do :; done) & pids+=($!); done
  for hc in count compensate; do
    for d in 1 2 4; do echo "busy cores $busy, host contention $hc, dilation $d: $(run $d $hc)"; done
  done
  for p in "${pids[@]}"; do kill "$p"; done
done
