/* The CUDA 12 runtime's entry points that CUDA 13 renamed, removed or changed (torch 2.9's cu12
 * builds, vLLM 0.15). The shim is built against the CUDA 13 headers; what differs for a CUDA 12
 * caller is here:
 *
 *  - names that only CUDA 12 exports (cudaGetDeviceProperties_v2 with its own struct layout,
 *    cudaStreamGetCaptureInfo_v2/_v3, the _v2 names of what 13 renamed): plain API definitions;
 *  - names that both export with different signatures (cudaMemAdvise's int device, ...): defined
 *    as rv12_<name> and bound, through `.symver`, to <name>@libcudart.so.12 only. glibc binds a
 *    CUDA 12 caller's versioned reference to that definition, and every other reference, versioned
 *    @libcudart.so.13 or not, to the CUDA 13 one (<name>@@libcudart.so.13). The EPV lines of
 *    entrypoints.def list them, and the version script is generated from those lines.
 *
 * Out-parameter structs that grew in 13 (checked by comparing every struct both headers declare):
 * cudaPointerAttributes (24 -> 88 bytes) and cudaDeviceProp; the others (cudaResourceDesc, the
 * external memory/semaphore descriptors, cudaChildGraphNodeParams) only reach stubs.
 *
 * The CUDA 12 cudaDeviceProp is declared here by hand: it is the CUDA 13 one with the eight
 * fields 13 removed (clockRate, ...) and a longer reserved tail. tests/shim/test_cuda12.py checks
 * its offsets against the CUDA 12 headers when an engine environment has them. */
#define _GNU_SOURCE
#include <cuda_runtime_api.h>
#include <string.h>

#include "shim.h"

#define API RV_EXPORT

/* CUDA 12.x struct cudaDeviceProp (driver_types.h), field for field. */
struct rv_cudaDeviceProp12 {
  char name[256];
  cudaUUID_t uuid;
  char luid[8];
  unsigned int luidDeviceNodeMask;
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int regsPerBlock;
  int warpSize;
  size_t memPitch;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int clockRate;
  size_t totalConstMem;
  int major;
  int minor;
  size_t textureAlignment;
  size_t texturePitchAlignment;
  int deviceOverlap;
  int multiProcessorCount;
  int kernelExecTimeoutEnabled;
  int integrated;
  int canMapHostMemory;
  int computeMode;
  int maxTexture1D;
  int maxTexture1DMipmap;
  int maxTexture1DLinear;
  int maxTexture2D[2];
  int maxTexture2DMipmap[2];
  int maxTexture2DLinear[3];
  int maxTexture2DGather[2];
  int maxTexture3D[3];
  int maxTexture3DAlt[3];
  int maxTextureCubemap;
  int maxTexture1DLayered[2];
  int maxTexture2DLayered[3];
  int maxTextureCubemapLayered[2];
  int maxSurface1D;
  int maxSurface2D[2];
  int maxSurface3D[3];
  int maxSurface1DLayered[2];
  int maxSurface2DLayered[3];
  int maxSurfaceCubemap;
  int maxSurfaceCubemapLayered[2];
  size_t surfaceAlignment;
  int concurrentKernels;
  int ECCEnabled;
  int pciBusID;
  int pciDeviceID;
  int pciDomainID;
  int tccDriver;
  int asyncEngineCount;
  int unifiedAddressing;
  int memoryClockRate;
  int memoryBusWidth;
  int l2CacheSize;
  int persistingL2CacheMaxSize;
  int maxThreadsPerMultiProcessor;
  int streamPrioritiesSupported;
  int globalL1CacheSupported;
  int localL1CacheSupported;
  size_t sharedMemPerMultiprocessor;
  int regsPerMultiprocessor;
  int managedMemory;
  int isMultiGpuBoard;
  int multiGpuBoardGroupID;
  int hostNativeAtomicSupported;
  int singleToDoublePrecisionPerfRatio;
  int pageableMemoryAccess;
  int concurrentManagedAccess;
  int computePreemptionSupported;
  int canUseHostPointerForRegisteredMem;
  int cooperativeLaunch;
  int cooperativeMultiDeviceLaunch;
  size_t sharedMemPerBlockOptin;
  int pageableMemoryAccessUsesHostPageTables;
  int directManagedMemAccessFromHost;
  int maxBlocksPerMultiProcessor;
  int accessPolicyMaxWindowSize;
  size_t reservedSharedMemPerBlock;
  int hostRegisterSupported;
  int sparseCudaArraySupported;
  int hostRegisterReadOnlySupported;
  int timelineSemaphoreInteropSupported;
  int memoryPoolsSupported;
  int gpuDirectRDMASupported;
  unsigned int gpuDirectRDMAFlushWritesOptions;
  int gpuDirectRDMAWritesOrdering;
  unsigned int memoryPoolSupportedHandleTypes;
  int deferredMappingCudaArraySupported;
  int ipcEventSupported;
  int clusterLaunch;
  int unifiedFunctionPointers;
  int reserved[63];
};

API cudaError_t cudaGetDeviceProperties_v2(struct rv_cudaDeviceProp12 *p, int dev) {
  struct cudaDeviceProp q;
  cudaError_t e = cudaGetDeviceProperties(&q, dev);
  if (e != cudaSuccess) return e;
  if (!p) return cudaErrorInvalidValue;
  memset(p, 0, sizeof *p);
#define C(f) memcpy(&p->f, &q.f, sizeof p->f)
  C(name); C(uuid); C(luid); C(luidDeviceNodeMask); C(totalGlobalMem); C(sharedMemPerBlock);
  C(regsPerBlock); C(warpSize); C(memPitch); C(maxThreadsPerBlock); C(maxThreadsDim);
  C(maxGridSize); C(totalConstMem); C(major); C(minor); C(textureAlignment);
  C(texturePitchAlignment); C(multiProcessorCount); C(integrated); C(canMapHostMemory);
  C(maxTexture1D); C(maxTexture1DMipmap); C(maxTexture2D); C(maxTexture2DMipmap);
  C(maxTexture2DLinear); C(maxTexture2DGather); C(maxTexture3D); C(maxTexture3DAlt);
  C(maxTextureCubemap); C(maxTexture1DLayered); C(maxTexture2DLayered); C(maxTextureCubemapLayered);
  C(maxSurface1D); C(maxSurface2D); C(maxSurface3D); C(maxSurface1DLayered); C(maxSurface2DLayered);
  C(maxSurfaceCubemap); C(maxSurfaceCubemapLayered); C(surfaceAlignment); C(concurrentKernels);
  C(ECCEnabled); C(pciBusID); C(pciDeviceID); C(pciDomainID); C(tccDriver); C(asyncEngineCount);
  C(unifiedAddressing); C(memoryBusWidth); C(l2CacheSize); C(persistingL2CacheMaxSize);
  C(maxThreadsPerMultiProcessor); C(streamPrioritiesSupported); C(globalL1CacheSupported);
  C(localL1CacheSupported); C(sharedMemPerMultiprocessor); C(regsPerMultiprocessor);
  C(managedMemory); C(isMultiGpuBoard); C(multiGpuBoardGroupID); C(hostNativeAtomicSupported);
  C(pageableMemoryAccess); C(concurrentManagedAccess); C(computePreemptionSupported);
  C(canUseHostPointerForRegisteredMem); C(cooperativeLaunch); C(sharedMemPerBlockOptin);
  C(pageableMemoryAccessUsesHostPageTables); C(directManagedMemAccessFromHost);
  C(maxBlocksPerMultiProcessor); C(accessPolicyMaxWindowSize); C(reservedSharedMemPerBlock);
  C(hostRegisterSupported); C(sparseCudaArraySupported); C(hostRegisterReadOnlySupported);
  C(timelineSemaphoreInteropSupported); C(memoryPoolsSupported); C(gpuDirectRDMASupported);
  C(gpuDirectRDMAFlushWritesOptions); C(gpuDirectRDMAWritesOrdering);
  C(memoryPoolSupportedHandleTypes); C(deferredMappingCudaArraySupported); C(ipcEventSupported);
  C(clusterLaunch); C(unifiedFunctionPointers);
#undef C
  /* the fields CUDA 13 dropped, from the same attribute table as the rest (device.c) */
#define ATTR(field, attr) do { int v_ = 0; rv_device_attribute(dev, (attr), &v_); p->field = v_; } while (0)
  ATTR(clockRate, 13);                         /* cudaDevAttrClockRate (kHz) */
  ATTR(memoryClockRate, 36);                   /* cudaDevAttrMemoryClockRate (kHz) */
  ATTR(kernelExecTimeoutEnabled, 17);          /* cudaDevAttrKernelExecTimeout */
  ATTR(computeMode, 20);                       /* cudaDevAttrComputeMode */
  ATTR(singleToDoublePrecisionPerfRatio, 87);  /* cudaDevAttrSingleToDoublePrecisionPerfRatio */
#undef ATTR
  p->deviceOverlap = 1;                        /* deprecated since CUDA 5: asyncEngineCount > 0 */
  p->maxTexture1DLinear = 1 << 27;             /* 134217728 on every part since Kepler */
  p->cooperativeMultiDeviceLaunch = 0;         /* removed with CUDA 12 multi-device launch */
  return cudaSuccess;
}

/* CUDA 12's cudaStreamGetCaptureInfo (the _v2 that its header's cudaStreamGetCaptureInfo names):
 * no edge data. _v3 is CUDA 13's signature. */
API cudaError_t cudaStreamGetCaptureInfo_v2(cudaStream_t s, enum cudaStreamCaptureStatus *status,
                                            unsigned long long *id, cudaGraph_t *graph,
                                            const cudaGraphNode_t **deps, size_t *ndeps) {
  return cudaStreamGetCaptureInfo(s, status, id, graph, deps, NULL, ndeps);
}
API cudaError_t cudaStreamGetCaptureInfo_v3(cudaStream_t s, enum cudaStreamCaptureStatus *status,
                                            unsigned long long *id, cudaGraph_t *graph,
                                            const cudaGraphNode_t **deps, const cudaGraphEdgeData **edges,
                                            size_t *ndeps) {
  return cudaStreamGetCaptureInfo(s, status, id, graph, deps, edges, ndeps);
}

API cudaError_t cudaEventElapsedTime_v2(float *ms, cudaEvent_t start, cudaEvent_t end) {
  return cudaEventElapsedTime(ms, start, end);
}

/* CUDA 12's _v2 names are CUDA 13's signatures. */
API cudaError_t cudaMemPrefetchAsync_v2(const void *p, size_t n, struct cudaMemLocation loc, unsigned int flags,
                                        cudaStream_t s) {
  return cudaMemPrefetchAsync(p, n, loc, flags, s);
}
API cudaError_t cudaMemAdvise_v2(const void *p, size_t n, enum cudaMemoryAdvise a, struct cudaMemLocation loc) {
  return cudaMemAdvise(p, n, a, loc);
}

/* The pre-CUDA-4 thread API, still exported by 12 (removed in 13). */
API cudaError_t cudaThreadSynchronize(void) { return cudaDeviceSynchronize(); }
API cudaError_t cudaThreadExit(void) { return cudaDeviceReset(); }

/* ---- same name, CUDA 12 signature: <name>@libcudart.so.12 (EPV lines of entrypoints.def) */

static struct cudaMemLocation rv12_location(int device) {
  struct cudaMemLocation loc;
  loc.type = device == cudaCpuDeviceId ? cudaMemLocationTypeHost : cudaMemLocationTypeDevice;
  loc.id = device == cudaCpuDeviceId ? 0 : device;
  return loc;
}

RV_EXPORT cudaError_t rv12_cudaMemAdvise(const void *p, size_t n, enum cudaMemoryAdvise a, int device) {
  return cudaMemAdvise(p, n, a, rv12_location(device));
}
RV_EXPORT cudaError_t rv12_cudaMemPrefetchAsync(const void *p, size_t n, int device, cudaStream_t s) {
  return cudaMemPrefetchAsync(p, n, rv12_location(device), 0, s);
}
/* A CUDA 12 program learns it runs on a 12.x runtime (12.8: what torch 2.9.1's cu128 wheels carry). */
RV_EXPORT cudaError_t rv12_cudaRuntimeGetVersion(int *v) {
  if (!v) return cudaErrorInvalidValue;
  *v = 12080;
  return cudaSuccess;
}

/* CUDA 12's cudaPointerAttributes is 24 bytes (type, device, devicePointer, hostPointer); 13 adds
 * a 64-byte reserved tail, which the CUDA 13 definition would write past a 12 caller's struct. */
struct rv_cudaPointerAttributes12 { enum cudaMemoryType type; int device; void *devicePointer; void *hostPointer; };
RV_EXPORT cudaError_t rv12_cudaPointerGetAttributes(struct rv_cudaPointerAttributes12 *a, const void *ptr) {
  struct cudaPointerAttributes q;
  cudaError_t e = cudaPointerGetAttributes(&q, ptr);
  if (e == cudaSuccess && a) memcpy(a, &q, sizeof *a);
  return a ? e : cudaErrorInvalidValue;
}

#define EP(lib, name, kind)
#define EPV(lib, name, soname) __asm__(".symver rv12_" #name ", " #name "@" #soname);
#include "../entrypoints.def"
#undef EPV
#undef EP
