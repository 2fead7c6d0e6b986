/* Interception overhead per kernel launch, in ns: the cost the shim adds to each launch that
 * the host issues (record the op, predict its duration, put it on the stream's timeline).
 *
 * Run: benchmarks/launch_overhead.sh   (builds this file and runs it under the shim)
 */
#define _GNU_SOURCE
#include <cublas_api.h>
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

extern void **__cudaRegisterFatBinary(void *);
extern void __cudaRegisterFunction(void **, const char *, char *, const char *, int, uint3 *, uint3 *, dim3 *,
                                   dim3 *, int *);
extern cudaError_t __cudaGetKernel(cudaKernel_t *, const void *);
extern cudaError_t __cudaLaunchKernel(cudaKernel_t, dim3, dim3, void **, size_t, cudaStream_t);

static void host_stub(void) {}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

#define N 200000
#define REPS 7

int main(void) {
  void **fb = __cudaRegisterFatBinary(NULL);
  __cudaRegisterFunction(fb, (const char *)host_stub, "_Z15rms_norm_kernelPfPKfi", "rms_norm", -1, NULL, NULL,
                         NULL, NULL, NULL);
  cudaKernel_t kern;
  __cudaGetKernel(&kern, (const void *)host_stub);
  CUmodule mod;
  CUfunction fn;
  cuModuleLoadData(&mod, "");
  cuModuleGetFunction(&fn, mod, "triton_poi_fused_add_0");
  cudaStream_t s;
  cudaStreamCreate(&s);
  dim3 g = {128, 1, 1}, b = {256, 1, 1};
  void *args[1] = {NULL};

  cublasHandle_t h;
  cublasCreate_v2(&h);
  cublasSetStream_v2(h, s);
  float alpha = 1, beta = 0;
  const char *names[] = {"cudaLaunchKernel (runtime, by host stub)", "__cudaLaunchKernel (CUDA 13 nvcc path)",
                         "cuLaunchKernel (driver, Triton path)", "cublasGemmEx 4096x4096x4096 bf16"};
  for (int path = 0; path < 4; path++) {
    double per[REPS];
    for (int r = 0; r < REPS; r++) {
      double t0 = now_ns();
      for (int i = 0; i < N; i++) {
        if (path == 0) cudaLaunchKernel((const void *)host_stub, g, b, args, 0, s);
        else if (path == 1) __cudaLaunchKernel(kern, g, b, args, 0, s);
        else if (path == 2) cuLaunchKernel(fn, 128, 1, 1, 256, 1, 1, 0, s, args, NULL);
        else cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4096, 4096, 4096, &alpha, NULL, CUDA_R_16BF, 4096, NULL,
                          CUDA_R_16BF, 4096, &beta, NULL, CUDA_R_16BF, 4096, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      }
      per[r] = (now_ns() - t0) / N;
      cudaStreamSynchronize(s);
    }
    qsort(per, REPS, sizeof per[0], cmp);
    printf("%-44s median %7.1f ns/launch (min %.1f, max %.1f; %d x %d launches)\n", names[path], per[REPS / 2],
           per[0], per[REPS - 1], REPS, N);
  }
  return 0;
}
