/* Benchmark: the cost of reading the clock (clock_gettime(CLOCK_MONOTONIC)) and of a kernel
 * launch, with the shim's time warp off and on. Built and run by benchmarks/timewarp.sh. */
#include <cuda.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); /* CPU clocks stay real under the warp */
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  enum { N = 2000000, L = 200000 };
  struct timespec ts;
  volatile long sink = 0;
  double t0 = now();
  for (int i = 0; i < N; i++) { clock_gettime(CLOCK_MONOTONIC, &ts); sink += ts.tv_nsec; }
  double clk = (now() - t0) / N * 1e9;
  CUdevice d; CUcontext c;
  cuInit(0); cuDeviceGet(&d, 0); cuDevicePrimaryCtxRetain(&c, d); cuCtxSetCurrent(c);
  /* The async memset path puts an op on the stream timeline as a kernel launch does; the
   * allocation is bulk (above REVATI_BACKED_MAX), so no host memory is written. */
  CUdeviceptr p; cuMemAlloc(&p, 256u << 20);
  t0 = now();
  for (int i = 0; i < L; i++) cuMemsetD8Async(p, 0, 256u << 20, 0);
  double launch = (now() - t0) / L * 1e9;
  printf("clock_gettime(CLOCK_MONOTONIC): %.1f ns per read\n", clk);
  printf("async memset on the stream timeline (launch path): %.1f ns per op\n", launch);
  return 0;
}
