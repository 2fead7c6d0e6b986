"""Benchmark: jumps per second and virtual seconds per wall second when N threads tick with
10 ms poll timeouts (the shape of gloo's TCP loops: vLLM runs six of them per process) while
the main thread sleeps 2 virtual seconds. Run under the time warp by benchmarks/timewarp.sh."""
import json
import select
import sys
import threading
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 6
stop = False


def tick():
    ep = select.epoll()
    while not stop:
        ep.poll(0.010)


for _ in range(n):
    threading.Thread(target=tick, daemon=True).start()
t0 = time.monotonic()
time.sleep(2.0)
print(json.dumps({"tickers": n, "virtual_s": round(time.monotonic() - t0, 6)}))
stop = True
