/* A CUDA 12 caller (torch 2.9's cu12 builds) and a CUDA 13 one in one process: references
 * versioned @libcudart.so.12 bind to the CUDA 12 variants (src/cuda12.c), the others to the
 * CUDA 13 definitions. Runs under the shim like the other tests (see the Makefile). */
#define _GNU_SOURCE
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

static int failures;
#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) { fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); failures++; } \
  } while (0)

/* What a CUDA 12 object file references (its headers declare these names). */
extern cudaError_t rt_version12(int *v);
__asm__(".symver rt_version12, cudaRuntimeGetVersion@libcudart.so.12");
extern cudaError_t advise12(const void *p, size_t n, enum cudaMemoryAdvise a, int device);
__asm__(".symver advise12, cudaMemAdvise@libcudart.so.12");
extern cudaError_t prefetch12(const void *p, size_t n, int device, cudaStream_t s);
__asm__(".symver prefetch12, cudaMemPrefetchAsync@libcudart.so.12");
extern cudaError_t ptrattr12(void *a, const void *ptr);
__asm__(".symver ptrattr12, cudaPointerGetAttributes@libcudart.so.12");
extern cudaError_t rt_version13(int *v);
__asm__(".symver rt_version13, cudaRuntimeGetVersion@libcudart.so.13");

/* CUDA 12's struct cudaDeviceProp, as far as these checks read it: the offsets are the CUDA 12
 * header's (tests/shim/test_cuda12.py compares src/cuda12.c's whole struct with that header). */
extern cudaError_t cudaGetDeviceProperties_v2(void *p, int dev);
extern cudaError_t cudaStreamGetCaptureInfo_v2(cudaStream_t, enum cudaStreamCaptureStatus *, unsigned long long *,
                                               cudaGraph_t *, const cudaGraphNode_t **, size_t *);

int main(void) {
  int v = 0;
  CHECK(rt_version12(&v) == cudaSuccess && v == 12080);
  CHECK(rt_version13(&v) == cudaSuccess && v == 13000);
  CHECK(cudaRuntimeGetVersion(&v) == cudaSuccess && v == 13000);  /* unversioned: the newest */
  void *p = NULL;
  int at;
  CHECK(cudaMallocManaged(&p, 1 << 20, cudaMemAttachGlobal) == cudaSuccess || cudaMalloc(&p, 1 << 20) == cudaSuccess);
  CHECK(advise12(p, 1 << 20, cudaMemAdviseSetReadMostly, 0) == cudaSuccess);
  CHECK(prefetch12(p, 1 << 20, cudaCpuDeviceId, 0) == cudaSuccess);

  unsigned char attr12[88];
  memset(attr12, 0xAB, sizeof attr12);
  CHECK(ptrattr12(attr12, p) == cudaSuccess);
  memcpy(&at, attr12, sizeof at);
  CHECK(at == cudaMemoryTypeDevice || at == cudaMemoryTypeManaged);
  CHECK(attr12[24] == 0xAB);             /* CUDA 12's struct is 24 bytes: nothing written past it */

  unsigned char prop12[2048];
  memset(prop12, 0xAB, sizeof prop12);
  CHECK(cudaGetDeviceProperties_v2(prop12, 0) == cudaSuccess);
  CHECK(strcmp((const char *)prop12, "NVIDIA H100 80GB HBM3") == 0);
  memcpy(&at, prop12 + 348, sizeof at);  /* clockRate (kHz), CUDA 12 offset 348 */
  CHECK(at == 1980000);
  memcpy(&at, prop12 + 360, sizeof at);  /* major */
  CHECK(at == 9);
  memcpy(&at, prop12 + 388, sizeof at);  /* multiProcessorCount */
  CHECK(at == 132);
  CHECK(prop12[1032] == 0xAB);           /* sizeof(struct cudaDeviceProp) is 1032 in CUDA 12 */

  enum cudaStreamCaptureStatus st = cudaStreamCaptureStatusInvalidated;
  unsigned long long id = 7;
  CHECK(cudaStreamGetCaptureInfo_v2(0, &st, &id, NULL, NULL, NULL) == cudaSuccess && st == cudaStreamCaptureStatusNone);
  if (failures) fprintf(stderr, "%d failures\n", failures);
  else puts("cuda12_variants: ok");
  return failures != 0;
}
