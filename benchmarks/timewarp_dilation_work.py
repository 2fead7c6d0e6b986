"""A CPU + GPU loop for benchmarks/timewarp_dilation.sh: 100 x (Python work, 10 ops of 1 ms, sync)."""
import json, time, torch
a = torch.randn(64, 64, device="cuda"); torch.cuda.synchronize()
def cpu_work():
    x = 0
    for i in range(20000): x += i * i
    return x
t0 = time.monotonic(); c0 = time.process_time()
for _ in range(100):
    cpu_work()
    for _ in range(10): a @ a
    torch.cuda.synchronize()
print(json.dumps({"virtual_s": round(time.monotonic() - t0, 4), "cpu_s": round(time.process_time() - c0, 4)}))
