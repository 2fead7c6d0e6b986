/* One small snippet per intercepted call, with its expectation beside it. Runs under the
 * shim with REVATI_PREDICTOR=constant:1ms (see the Makefile's test target), no torch. */
#define _GNU_SOURCE
#include <cublasLt.h>
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <nvml.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern void **__cudaRegisterFatBinary(void *);
extern void __cudaRegisterFunction(void **, const char *, char *, const char *, int, uint3 *, uint3 *, dim3 *,
                                   dim3 *, int *);

static int failures;
#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) { fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); failures++; } \
  } while (0)

static void kernel_stub(void) {}

static void devices(void) {
  int n = 0, d = -1;
  CHECK(cudaGetDeviceCount(&n) == cudaSuccess && n == 8);
  CHECK(cudaSetDevice(3) == cudaSuccess && cudaGetDevice(&d) == cudaSuccess && d == 3);
  CHECK(cudaSetDevice(8) == cudaErrorInvalidDevice);
  CHECK(cudaGetLastError() == cudaErrorInvalidDevice && cudaGetLastError() == cudaSuccess);
  cudaSetDevice(0);
  struct cudaDeviceProp p;
  CHECK(cudaGetDeviceProperties(&p, 0) == cudaSuccess);
  CHECK(strcmp(p.name, "NVIDIA H100 80GB HBM3") == 0 && p.multiProcessorCount == 132 && p.major == 9);
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) == cudaSuccess && sms == 132);
  char bus[32];
  CHECK(cudaDeviceGetPCIBusId(bus, sizeof bus, 1) == cudaSuccess && strcmp(bus, "00000000:2A:00.0") == 0);
}

static void memory(void) {
  size_t free0, total;
  CHECK(cudaMemGetInfo(&free0, &total) == cudaSuccess && total == 81559ULL << 20);
  int *small = NULL;
  CHECK(cudaMalloc((void **)&small, 4096) == cudaSuccess && small);
  int in[1024], out[1024];
  for (int i = 0; i < 1024; i++) in[i] = i * 7;
  CHECK(cudaMemcpy(small, in, sizeof in, cudaMemcpyHostToDevice) == cudaSuccess);
  CHECK(cudaMemcpy(out, small, sizeof out, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(memcmp(in, out, sizeof in) == 0);                 /* backed: control data is real */
  CHECK(cudaMemset(small, 0, sizeof in) == cudaSuccess);
  CHECK(cudaMemcpy(out, small, sizeof out, cudaMemcpyDeviceToHost) == cudaSuccess && out[5] == 0);
  char *bulk = NULL;
  CHECK(cudaMalloc((void **)&bulk, 256u << 20) == cudaSuccess);
  CHECK(cudaMemcpy(bulk, in, sizeof in, cudaMemcpyHostToDevice) == cudaSuccess);
  CHECK(cudaMemcpy(out, bulk, sizeof out, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(out[1] == 0);                                       /* bulk: writes are dropped */
  size_t free1;
  cudaMemGetInfo(&free1, &total);
  CHECK(free0 - free1 == 4096 + (256u << 20));             /* capacity accounting, 512-byte granules */
  void *huge = NULL;
  CHECK(cudaMalloc(&huge, total) == cudaErrorMemoryAllocation && huge == NULL);
  CHECK(cudaGetLastError() == cudaErrorMemoryAllocation);
  struct cudaPointerAttributes a;
  CHECK(cudaPointerGetAttributes(&a, bulk + 100) == cudaSuccess && a.type == cudaMemoryTypeDevice);
  void *pinned = NULL;
  CHECK(cudaHostAlloc(&pinned, 1 << 16, 0) == cudaSuccess);
  CHECK(cudaPointerGetAttributes(&a, pinned) == cudaSuccess && a.type == cudaMemoryTypeHost);
  CHECK(cudaPointerGetAttributes(&a, in) == cudaSuccess && a.type == cudaMemoryTypeUnregistered);
  CUdeviceptr dp = 0;
  CHECK(cuPointerGetAttribute(&dp, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, (CUdeviceptr)small) == CUDA_SUCCESS);
  CHECK(cuPointerGetAttribute(&dp, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, (CUdeviceptr)in) == CUDA_ERROR_INVALID_VALUE);
  CHECK(cudaFree(bulk) == cudaSuccess && cudaFree(small) == cudaSuccess && cudaFreeHost(pinned) == cudaSuccess);
  size_t free2;
  cudaMemGetInfo(&free2, &total);
  CHECK(free2 == free0);
}

static void timelines(void) {
  void **fb = __cudaRegisterFatBinary(NULL);
  __cudaRegisterFunction(fb, (const char *)kernel_stub, "_Z11some_kernelv", "some_kernel", -1, NULL, NULL, NULL,
                         NULL, NULL);
  cudaStream_t s;
  cudaEvent_t e0, e1;
  CHECK(cudaStreamCreate(&s) == cudaSuccess);
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  dim3 g = {1, 1, 1}, b = {32, 1, 1};
  cudaEventRecord(e0, s);
  for (int i = 0; i < 3; i++) CHECK(cudaLaunchKernel((const void *)kernel_stub, g, b, NULL, 0, s) == cudaSuccess);
  cudaEventRecord(e1, s);
  for (int i = 0; i < 500; i++) cudaLaunchKernel((const void *)kernel_stub, g, b, NULL, 0, s);
  CHECK(cudaStreamQuery(s) == cudaErrorNotReady);         /* ~0.5 s of virtual GPU work is pending */
  CHECK(cudaStreamSynchronize(s) == cudaSuccess && cudaStreamQuery(s) == cudaSuccess);
  float ms = 0;
  CHECK(cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess);
  CHECK(ms >= 3.0f && ms < 4.5f);                         /* 3 x constant:1ms, plus host gaps */

  /* Capture: nothing runs during capture; a replay puts all nodes on the timeline. */
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess);
  enum cudaStreamCaptureStatus st;
  CHECK(cudaStreamIsCapturing(s, &st) == cudaSuccess && st == cudaStreamCaptureStatusActive);
  for (int i = 0; i < 5; i++) cudaLaunchKernel((const void *)kernel_stub, g, b, NULL, 0, s);
  CHECK(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  size_t nodes = 0;
  CHECK(cudaGraphGetNodes(graph, NULL, &nodes) == cudaSuccess && nodes == 5);
  CHECK(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  cudaEventRecord(e0, s);
  CHECK(cudaGraphLaunch(exec, s) == cudaSuccess);
  cudaEventRecord(e1, s);
  cudaEventSynchronize(e1);
  CHECK(cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess && ms >= 5.0f && ms < 6.5f);

  /* Cross-stream dependency through an event. */
  cudaStream_t s2;
  cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking);
  cudaLaunchKernel((const void *)kernel_stub, g, b, NULL, 0, s);
  cudaEventRecord(e0, s);
  CHECK(cudaStreamWaitEvent(s2, e0, 0) == cudaSuccess);
  cudaLaunchKernel((const void *)kernel_stub, g, b, NULL, 0, s2);
  cudaEventRecord(e1, s2);
  cudaEventSynchronize(e1);
  CHECK(cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess && ms >= 1.0f && ms < 2.5f);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s2);
  cudaStreamDestroy(s);
}

static void libraries(void) {
  cublasLtHandle_t lt;
  CHECK(cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, 64, 128, 64);
  cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, 128, 32, 128);
  cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, 64, 32, 64);
  cublasLtMatmulPreference_t pref;
  cublasLtMatmulPreferenceCreate(&pref);
  cublasLtMatmulHeuristicResult_t res[4];
  int n = 0;
  CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 4, res, &n) == CUBLAS_STATUS_SUCCESS && n == 1);
  CHECK(cublasLtMatmul(lt, desc, NULL, NULL, la, NULL, lb, NULL, NULL, lc, NULL, lc, &res[0].algo, NULL, 0, 0) ==
        CUBLAS_STATUS_SUCCESS);
  unsigned int count = 0;
  nvmlDevice_t dev;
  char name[96];
  CHECK(nvmlInit_v2() == NVML_SUCCESS && nvmlDeviceGetCount_v2(&count) == NVML_SUCCESS && count == 8);
  CHECK(nvmlDeviceGetHandleByIndex_v2(7, &dev) == NVML_SUCCESS);
  CHECK(nvmlDeviceGetName(dev, name, sizeof name) == NVML_SUCCESS && strcmp(name, "NVIDIA H100 80GB HBM3") == 0);
  nvmlMemory_t mem;
  CHECK(nvmlDeviceGetMemoryInfo(dev, &mem) == NVML_SUCCESS && mem.total == 81559ULL << 20);
  CHECK(nvmlDeviceGetHandleByIndex_v2(8, &dev) == NVML_ERROR_INVALID_ARGUMENT);
  void *fn = NULL;
  CUdriverProcAddressQueryResult q;
  CHECK(cuGetProcAddress_v2("cuLaunchKernel", &fn, 13000, 0, &q) == CUDA_SUCCESS && fn == (void *)cuLaunchKernel);
}

int main(void) {
  devices();
  memory();
  timelines();
  libraries();
  if (failures) {
    fprintf(stderr, "api_snippets: %d failure(s)\n", failures);
    return 1;
  }
  printf("api_snippets: ok\n");
  return 0;
}
