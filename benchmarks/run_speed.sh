#!/usr/bin/env bash
# Benchmark: how fast `revati run` emulates, in virtual seconds per wall second of the load
# phase (the report's speedup), for the default spec and a decode-heavy 70B TP=4 spec.
# Reproduce with: benchmarks/run_speed.sh [SPEC...]   (results under runs/bench-speed/)
set -euo pipefail
cd "$(dirname "$0")/.."
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(examples/default.yaml examples/llama-70b-tp4-decode.yaml)
echo "command: benchmarks/run_speed.sh ${specs[*]}"
echo "host: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg)"
for spec in "${specs[@]}"; do
  out="runs/bench-speed/$(basename "$spec" .yaml)"
  mkdir -p runs/bench-speed
  t0=$(date +%s)
  .venv/bin/revati run "$spec" --out "$out" > "$out.log" 2>&1 || { echo "$spec: FAILED, see $out.log"; tail -5 "$out.log"; continue; }
  t1=$(date +%s)
  .venv/bin/python - "$spec" "$out/report.json" "$((t1 - t0))" <<'PY'
import json, sys
spec, path, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = json.load(open(path)); e = r["emulation"]
print(f"{spec}: {r['completed']} requests, {r['total_output_tokens']} output tokens; "
      f"virtual {e['virtual_s']:.1f} s in {e['wall_s']:.1f} wall s of load = {e['speedup']:.2f} virtual s per wall s; "
      f"{e['jumps']} jumps ({e['jumps'] / e['wall_s']:.0f}/s); set-up {e['setup_wall_s']:.0f} s; "
      f"whole command {total} s; clock slowed {((e.get('contention_factor') or {}).get('mean_factor') or 1):.2f}x "
      f"for host contention; TPOT p50 {r['median_tpot_ms']:.1f} ms")
PY
done
