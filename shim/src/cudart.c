/* The CUDA runtime API (libcudart.so.13) over the virtual devices. */
#define _GNU_SOURCE
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

#define API RV_EXPORT

static __thread cudaError_t rv_last_error = cudaSuccess;

static cudaError_t rv_fail(cudaError_t e, const char *where) {
  rv_last_error = e;
  RV_LOG(RV_LOG_DEBUG, "%s returns error %d", where, (int)e);
  return e;
}
#define fail(e) rv_fail((e), __func__)

#define INIT() rv_ensure_init()
#define CUR_DEVICE_OR_FAIL()                               \
  do {                                                     \
    if (rv_num_visible == 0) return fail(cudaErrorNoDevice); \
  } while (0)

/* ------------------------------------------------------------- version, errors */

API cudaError_t cudaRuntimeGetVersion(int *v) { if (!v) return cudaErrorInvalidValue; *v = 13000; return cudaSuccess; }
API cudaError_t cudaDriverGetVersion(int *v) { if (!v) return cudaErrorInvalidValue; *v = 13000; return cudaSuccess; }
API cudaError_t cudaGetLastError(void) { cudaError_t e = rv_last_error; rv_last_error = cudaSuccess; return e; }
API cudaError_t cudaPeekAtLastError(void) { return rv_last_error; }

API const char *cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorSymbolNotFound: return "cudaErrorSymbolNotFound";
    case cudaErrorHostMemoryAlreadyRegistered: return "cudaErrorHostMemoryAlreadyRegistered";
    case cudaErrorHostMemoryNotRegistered: return "cudaErrorHostMemoryNotRegistered";
    case cudaErrorPeerAccessAlreadyEnabled: return "cudaErrorPeerAccessAlreadyEnabled";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorMissingConfiguration: return "cudaErrorMissingConfiguration";
    case cudaErrorInvalidSymbol: return "cudaErrorInvalidSymbol";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorUnknown: return "cudaErrorUnknown";
    default: {
      static __thread char buf[48];
      snprintf(buf, sizeof buf, "cudaError_%d", (int)e);
      return buf;
    }
  }
}

API const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    default: return cudaGetErrorName(e);
  }
}

/* --------------------------------------------------------------------- devices */

API cudaError_t cudaGetDeviceCount(int *count) {
  INIT();
  if (!count) return cudaErrorInvalidValue;
  *count = rv_num_visible;
  return rv_num_visible ? cudaSuccess : fail(cudaErrorNoDevice);
}

API cudaError_t cudaGetDevice(int *dev) { INIT(); if (!dev) return cudaErrorInvalidValue; *dev = rv_current_device(); return cudaSuccess; }

API cudaError_t cudaSetDevice(int dev) {
  INIT();
  if (!rv_device_get(dev)) return fail(cudaErrorInvalidDevice);
  rv_set_current_device(dev);
  return cudaSuccess;
}

API cudaError_t cudaInitDevice(int dev, unsigned int deviceFlags, unsigned int flags) {
  (void)deviceFlags; (void)flags;
  INIT();
  return rv_device_get(dev) ? cudaSuccess : fail(cudaErrorInvalidDevice);
}
API cudaError_t cudaSetDeviceFlags(unsigned int flags) { (void)flags; INIT(); return cudaSuccess; }
API cudaError_t cudaGetDeviceFlags(unsigned int *flags) { INIT(); if (flags) *flags = cudaDeviceMapHost; return cudaSuccess; }
API cudaError_t cudaDeviceReset(void) { INIT(); return cudaSuccess; }
API cudaError_t cudaDeviceSynchronize(void) { INIT(); rv_device_sync(rv_current_device()); return cudaSuccess; }
API cudaError_t cudaChooseDevice(int *dev, const struct cudaDeviceProp *prop) { (void)prop; INIT(); if (dev) *dev = 0; return cudaSuccess; }

API cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int dev) {
  INIT();
  if (!value) return fail(cudaErrorInvalidValue);
  if (!rv_device_get(dev)) return fail(cudaErrorInvalidDevice);
  return rv_device_attribute(dev, (int)attr, value) ? fail(cudaErrorInvalidValue) : cudaSuccess;
}

API cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int dev) {
  INIT();
  rv_device *d = rv_device_get(dev);
  if (!d) return fail(cudaErrorInvalidDevice);
  if (!p) return fail(cudaErrorInvalidValue);
  const rv_gpu_spec *g = d->spec;
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "%s", g->name);
  memcpy(p->uuid.bytes, d->uuid_bytes, sizeof d->uuid_bytes);
  p->totalGlobalMem = g->memory_bytes;
  /* Every field with a device attribute comes from the one attribute table (device.c). */
#define ATTR(field, attr) do { int v_; rv_device_attribute(dev, (int)(attr), &v_); p->field = v_; } while (0)
  ATTR(sharedMemPerBlock, cudaDevAttrMaxSharedMemoryPerBlock);
  ATTR(regsPerBlock, cudaDevAttrMaxRegistersPerBlock);
  ATTR(warpSize, cudaDevAttrWarpSize);
  ATTR(memPitch, cudaDevAttrMaxPitch);
  ATTR(maxThreadsPerBlock, cudaDevAttrMaxThreadsPerBlock);
  ATTR(maxThreadsDim[0], cudaDevAttrMaxBlockDimX);
  ATTR(maxThreadsDim[1], cudaDevAttrMaxBlockDimY);
  ATTR(maxThreadsDim[2], cudaDevAttrMaxBlockDimZ);
  ATTR(maxGridSize[0], cudaDevAttrMaxGridDimX);
  ATTR(maxGridSize[1], cudaDevAttrMaxGridDimY);
  ATTR(maxGridSize[2], cudaDevAttrMaxGridDimZ);
  ATTR(totalConstMem, cudaDevAttrTotalConstantMemory);
  ATTR(major, cudaDevAttrComputeCapabilityMajor);
  ATTR(minor, cudaDevAttrComputeCapabilityMinor);
  ATTR(textureAlignment, cudaDevAttrTextureAlignment);
  ATTR(multiProcessorCount, cudaDevAttrMultiProcessorCount);
  ATTR(canMapHostMemory, cudaDevAttrCanMapHostMemory);
  ATTR(concurrentKernels, cudaDevAttrConcurrentKernels);
  ATTR(ECCEnabled, cudaDevAttrEccEnabled);
  ATTR(pciBusID, cudaDevAttrPciBusId);
  ATTR(asyncEngineCount, cudaDevAttrAsyncEngineCount);
  ATTR(unifiedAddressing, cudaDevAttrUnifiedAddressing);
  ATTR(memoryBusWidth, cudaDevAttrGlobalMemoryBusWidth);
  ATTR(l2CacheSize, cudaDevAttrL2CacheSize);
  ATTR(persistingL2CacheMaxSize, cudaDevAttrMaxPersistingL2CacheSize);
  ATTR(maxThreadsPerMultiProcessor, cudaDevAttrMaxThreadsPerMultiProcessor);
  ATTR(streamPrioritiesSupported, cudaDevAttrStreamPrioritiesSupported);
  ATTR(globalL1CacheSupported, cudaDevAttrGlobalL1CacheSupported);
  ATTR(localL1CacheSupported, cudaDevAttrLocalL1CacheSupported);
  ATTR(sharedMemPerMultiprocessor, cudaDevAttrMaxSharedMemoryPerMultiprocessor);
  ATTR(regsPerMultiprocessor, cudaDevAttrMaxRegistersPerMultiprocessor);
  ATTR(managedMemory, cudaDevAttrManagedMemory);
  ATTR(concurrentManagedAccess, cudaDevAttrConcurrentManagedAccess);
  ATTR(computePreemptionSupported, cudaDevAttrComputePreemptionSupported);
  ATTR(canUseHostPointerForRegisteredMem, cudaDevAttrCanUseHostPointerForRegisteredMem);
  ATTR(cooperativeLaunch, cudaDevAttrCooperativeLaunch);
  ATTR(sharedMemPerBlockOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin);
  ATTR(maxBlocksPerMultiProcessor, cudaDevAttrMaxBlocksPerMultiprocessor);
  ATTR(accessPolicyMaxWindowSize, cudaDevAttrMaxAccessPolicyWindowSize);
  ATTR(reservedSharedMemPerBlock, cudaDevAttrReservedSharedMemoryPerBlock);
  ATTR(hostRegisterSupported, cudaDevAttrHostRegisterSupported);
  ATTR(sparseCudaArraySupported, cudaDevAttrSparseCudaArraySupported);
  ATTR(hostRegisterReadOnlySupported, cudaDevAttrHostRegisterReadOnlySupported);
  ATTR(memoryPoolsSupported, cudaDevAttrMemoryPoolsSupported);
  ATTR(gpuDirectRDMASupported, cudaDevAttrGPUDirectRDMASupported);
  ATTR(deferredMappingCudaArraySupported, cudaDevAttrDeferredMappingCudaArraySupported);
  ATTR(ipcEventSupported, cudaDevAttrIpcEventSupport);
  ATTR(clusterLaunch, cudaDevAttrClusterLaunch);
  ATTR(unifiedFunctionPointers, 129); /* CU_DEVICE_ATTRIBUTE_UNIFIED_FUNCTION_POINTERS: no cudaDevAttr name */
  ATTR(deviceNumaId, cudaDevAttrNumaId);
  ATTR(hostNumaId, cudaDevAttrHostNumaId);
#undef ATTR
  p->texturePitchAlignment = 32;
  return cudaSuccess;
}

API cudaError_t cudaDeviceGetPCIBusId(char *pciBusId, int len, int dev) {
  INIT();
  rv_device *d = rv_device_get(dev);
  if (!d) return fail(cudaErrorInvalidDevice);
  snprintf(pciBusId, (size_t)len, "%s", d->pci_bus_id);
  return cudaSuccess;
}

API cudaError_t cudaDeviceGetByPCIBusId(int *dev, const char *pciBusId) {
  INIT();
  for (int i = 0; i < rv_num_visible; i++)
    if (strcasecmp(rv_devices[i].pci_bus_id, pciBusId) == 0 ||
        strcasecmp(rv_devices[i].pci_bus_id + 4, pciBusId) == 0) { *dev = i; return cudaSuccess; }
  return fail(cudaErrorInvalidDevice);
}

API cudaError_t cudaDeviceCanAccessPeer(int *can, int dev, int peer) {
  INIT();
  if (!rv_device_get(dev) || !rv_device_get(peer)) return fail(cudaErrorInvalidDevice);
  *can = dev != peer;
  return cudaSuccess;
}
API cudaError_t cudaDeviceEnablePeerAccess(int peer, unsigned int flags) { (void)peer; (void)flags; INIT(); return cudaSuccess; }
API cudaError_t cudaDeviceDisablePeerAccess(int peer) { (void)peer; INIT(); return cudaSuccess; }
API cudaError_t cudaDeviceGetP2PAttribute(int *value, enum cudaDeviceP2PAttr attr, int src, int dst) {
  INIT();
  (void)attr;
  *value = src != dst;
  return cudaSuccess;
}
API cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest) {
  INIT();
  if (least) *least = 0;
  if (greatest) *greatest = -5;
  return cudaSuccess;
}
API cudaError_t cudaDeviceSetLimit(enum cudaLimit limit, size_t value) { (void)limit; (void)value; INIT(); return cudaSuccess; }
API cudaError_t cudaDeviceGetLimit(size_t *value, enum cudaLimit limit) {
  INIT();
  switch (limit) {
    case cudaLimitStackSize: *value = 1024; break;
    case cudaLimitPrintfFifoSize: *value = 1 << 20; break;
    case cudaLimitMallocHeapSize: *value = 8 << 20; break;
    case cudaLimitPersistingL2CacheSize: *value = 0; break;
    default: *value = 0;
  }
  return cudaSuccess;
}
API cudaError_t cudaDeviceSetCacheConfig(enum cudaFuncCache c) { (void)c; INIT(); return cudaSuccess; }
API cudaError_t cudaDeviceGetCacheConfig(enum cudaFuncCache *c) { INIT(); if (c) *c = cudaFuncCachePreferNone; return cudaSuccess; }

/* ---------------------------------------------------------------------- memory */

API cudaError_t cudaMalloc(void **ptr, size_t size) {
  INIT();
  CUR_DEVICE_OR_FAIL();
  if (!ptr) return fail(cudaErrorInvalidValue);
  int rc = rv_dev_malloc(rv_current_device(), size, ptr);
  if (rc == -1) { *ptr = NULL; return fail(cudaErrorMemoryAllocation); }
  if (rc) return fail(cudaErrorInvalidValue);
  return cudaSuccess;
}

API cudaError_t cudaFree(void *ptr) {
  INIT();
  if (!ptr) return cudaSuccess;
  return rv_dev_free(ptr) ? fail(cudaErrorInvalidValue) : cudaSuccess;
}

API cudaError_t cudaMallocAsync(void **ptr, size_t size, cudaStream_t s) { (void)s; return cudaMalloc(ptr, size); }
API cudaError_t cudaFreeAsync(void *ptr, cudaStream_t s) { (void)s; return cudaFree(ptr); }
API cudaError_t cudaMallocManaged(void **ptr, size_t size, unsigned int flags) { (void)flags; return cudaMalloc(ptr, size); }

API cudaError_t cudaMallocHost(void **ptr, size_t size) {
  INIT();
  return rv_host_alloc(size, ptr) ? fail(cudaErrorMemoryAllocation) : cudaSuccess;
}
API cudaError_t cudaHostAlloc(void **ptr, size_t size, unsigned int flags) { (void)flags; return cudaMallocHost(ptr, size); }
API cudaError_t cudaFreeHost(void *ptr) { INIT(); if (!ptr) return cudaSuccess; return rv_host_free(ptr) ? fail(cudaErrorInvalidValue) : cudaSuccess; }
API cudaError_t cudaHostRegister(void *ptr, size_t size, unsigned int flags) {
  (void)flags;
  INIT();
  return rv_host_register(ptr, size) ? fail(cudaErrorHostMemoryAlreadyRegistered) : cudaSuccess;
}
API cudaError_t cudaHostUnregister(void *ptr) { INIT(); return rv_host_unregister(ptr) ? fail(cudaErrorHostMemoryNotRegistered) : cudaSuccess; }
API cudaError_t cudaHostGetDevicePointer(void **dev, void *host, unsigned int flags) { (void)flags; INIT(); *dev = host; return cudaSuccess; }
API cudaError_t cudaHostGetFlags(unsigned int *flags, void *host) { (void)host; INIT(); *flags = cudaHostAllocMapped; return cudaSuccess; }

API cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b) {
  INIT();
  CUR_DEVICE_OR_FAIL();
  rv_mem_get_info(rv_current_device(), free_b, total_b);
  return cudaSuccess;
}

API cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *ptr) {
  INIT();
  if (!a) return fail(cudaErrorInvalidValue);
  rv_alloc_info info;
  int kind = rv_classify(ptr, &info);
  memset(a, 0, sizeof *a);
  if (kind == RV_MEM_DEVICE) {
    a->type = cudaMemoryTypeDevice;
    a->device = info.device;
    a->devicePointer = (void *)ptr;
  } else if (kind == RV_MEM_HOST) {
    /* Pinned or registered host memory is mapped into the device address space (UVA). */
    a->type = cudaMemoryTypeHost;
    a->device = info.device;
    a->devicePointer = (void *)ptr;
    a->hostPointer = (void *)ptr;
  } else {
    a->type = cudaMemoryTypeUnregistered;
    a->device = -2;
    a->hostPointer = (void *)ptr;
  }
  return cudaSuccess;
}

static void submit_copy(void *dst, const void *src, size_t bytes, cudaStream_t stream, int keep_ptrs) {
  int dir = rv_copy_effect(dst, src, bytes);
  rv_op op = {.kind = RV_OP_MEMCPY, .api = 0};
  op.u.copy.bytes = bytes;
  op.u.copy.dir = (uint8_t)dir;
  if (keep_ptrs) { op.u.copy.dst = dst; op.u.copy.src = src; }
  struct CUstream_st *s = rv_stream_resolve(stream);
  rv_submit(s, &op);
  return;
}

/* Host-visible effect first, then the op on the timeline; synchronous copies wait. */
API cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream) {
  (void)kind;
  INIT();
  struct CUstream_st *s = rv_stream_resolve(stream);
  submit_copy(dst, src, count, stream, s->capture != NULL);
  return cudaSuccess;
}

API cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind) {
  cudaError_t e = cudaMemcpyAsync(dst, src, count, kind, 0);
  rv_periodic_flush();
  rv_stream_sync(rv_stream_resolve(0));
  return e;
}

API cudaError_t cudaMemcpyPeerAsync(void *dst, int dstDev, const void *src, int srcDev, size_t count, cudaStream_t s) {
  (void)dstDev; (void)srcDev;
  return cudaMemcpyAsync(dst, src, count, cudaMemcpyDeviceToDevice, s);
}
API cudaError_t cudaMemcpyPeer(void *dst, int dstDev, const void *src, int srcDev, size_t count) {
  (void)dstDev; (void)srcDev;
  return cudaMemcpy(dst, src, count, cudaMemcpyDeviceToDevice);
}

API cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                                  size_t height, enum cudaMemcpyKind kind, cudaStream_t stream) {
  (void)kind;
  INIT();
  int dir = RV_H2H;
  for (size_t r = 0; r < height; r++)
    dir = rv_copy_effect((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
  rv_op op = {.kind = RV_OP_MEMCPY};
  op.u.copy.bytes = (uint64_t)width * height;
  op.u.copy.dir = (uint8_t)dir;
  rv_submit(rv_stream_resolve(stream), &op);
  return cudaSuccess;
}
API cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                             enum cudaMemcpyKind kind) {
  cudaError_t e = cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, kind, 0);
  rv_periodic_flush();
  rv_stream_sync(rv_stream_resolve(0));
  return e;
}

API cudaError_t cudaMemsetAsync(void *dst, int value, size_t count, cudaStream_t stream) {
  INIT();
  rv_memset_effect(dst, value, count);
  struct CUstream_st *s = rv_stream_resolve(stream);
  rv_op op = {.kind = RV_OP_MEMSET};
  op.u.memset.bytes = count;
  if (s->capture) { op.u.memset.dst = dst; op.u.memset.value = value; }
  rv_submit(s, &op);
  return cudaSuccess;
}
API cudaError_t cudaMemset(void *dst, int value, size_t count) {
  cudaError_t e = cudaMemsetAsync(dst, value, count, 0);
  rv_periodic_flush();
  rv_stream_sync(rv_stream_resolve(0));
  return e;
}
API cudaError_t cudaMemset2DAsync(void *dst, size_t pitch, int value, size_t width, size_t height, cudaStream_t stream) {
  INIT();
  for (size_t r = 0; r < height; r++) rv_memset_effect((char *)dst + r * pitch, value, width);
  rv_op op = {.kind = RV_OP_MEMSET};
  op.u.memset.bytes = (uint64_t)width * height;
  rv_submit(rv_stream_resolve(stream), &op);
  return cudaSuccess;
}

API cudaError_t cudaMemPrefetchAsync(const void *p, size_t n, struct cudaMemLocation loc, unsigned int flags, cudaStream_t s) {
  (void)p; (void)n; (void)loc; (void)flags; (void)s; INIT(); return cudaSuccess;
}
API cudaError_t cudaMemAdvise(const void *p, size_t n, enum cudaMemoryAdvise a, struct cudaMemLocation loc) {
  (void)p; (void)n; (void)a; (void)loc; INIT(); return cudaSuccess;
}

/* Device symbols registered by __cudaRegisterVar: host shadow address -> device allocation. */
typedef struct { const void *host; void *dev; size_t size; } rv_symbol;
static rv_symbol *rv_symbols;
static size_t rv_nsymbols, rv_capsymbols;
static pthread_mutex_t rv_sym_lock = PTHREAD_MUTEX_INITIALIZER;

static rv_symbol *symbol_find(const void *host) {
  rv_symbol *r = NULL;
  pthread_mutex_lock(&rv_sym_lock);
  for (size_t i = 0; i < rv_nsymbols; i++) if (rv_symbols[i].host == host) { r = &rv_symbols[i]; break; }
  pthread_mutex_unlock(&rv_sym_lock);
  return r;
}

static void *symbol_address(rv_symbol *s) {
  /* Device storage is created on first use: most registered variables are never touched. */
  if (!s->dev && rv_dev_malloc(rv_current_device(), s->size ? s->size : 1, &s->dev)) return NULL;
  return s->dev;
}

API cudaError_t cudaGetSymbolAddress(void **dev, const void *symbol) {
  INIT();
  rv_symbol *s = symbol_find(symbol);
  if (!s || !(*dev = symbol_address(s))) return fail(cudaErrorInvalidSymbol);
  return cudaSuccess;
}
API cudaError_t cudaGetSymbolSize(size_t *size, const void *symbol) {
  INIT();
  rv_symbol *s = symbol_find(symbol);
  if (!s) return fail(cudaErrorInvalidSymbol);
  *size = s->size;
  return cudaSuccess;
}
API cudaError_t cudaMemcpyToSymbolAsync(const void *symbol, const void *src, size_t count, size_t offset,
                                        enum cudaMemcpyKind kind, cudaStream_t stream) {
  void *dev;
  cudaError_t e = cudaGetSymbolAddress(&dev, symbol);
  if (e) return e;
  return cudaMemcpyAsync((char *)dev + offset, src, count, kind, stream);
}
API cudaError_t cudaMemcpyToSymbol(const void *symbol, const void *src, size_t count, size_t offset, enum cudaMemcpyKind kind) {
  return cudaMemcpyToSymbolAsync(symbol, src, count, offset, kind, 0);
}
API cudaError_t cudaMemcpyFromSymbolAsync(void *dst, const void *symbol, size_t count, size_t offset,
                                          enum cudaMemcpyKind kind, cudaStream_t stream) {
  void *dev;
  cudaError_t e = cudaGetSymbolAddress(&dev, symbol);
  if (e) return e;
  return cudaMemcpyAsync(dst, (char *)dev + offset, count, kind, stream);
}
API cudaError_t cudaMemcpyFromSymbol(void *dst, const void *symbol, size_t count, size_t offset, enum cudaMemcpyKind kind) {
  return cudaMemcpyFromSymbolAsync(dst, symbol, count, offset, kind, 0);
}

/* --------------------------------------------------------------------- streams */

API cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned int flags, int priority) {
  INIT();
  CUR_DEVICE_OR_FAIL();
  if (!s) return fail(cudaErrorInvalidValue);
  *s = rv_stream_create(rv_current_device(), flags, priority);
  return cudaSuccess;
}
API cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) { return cudaStreamCreateWithPriority(s, flags, 0); }
API cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithPriority(s, 0, 0); }
API cudaError_t cudaStreamDestroy(cudaStream_t s) {
  INIT();
  if ((uintptr_t)s <= 2) return fail(cudaErrorInvalidResourceHandle);
  rv_stream_destroy(s);
  return cudaSuccess;
}
API cudaError_t cudaStreamSynchronize(cudaStream_t s) { INIT(); rv_periodic_flush(); rv_stream_sync(rv_stream_resolve(s)); return cudaSuccess; }
API cudaError_t cudaStreamQuery(cudaStream_t s) {
  INIT();
  return rv_stream_done(rv_stream_resolve(s)) ? cudaSuccess : cudaErrorNotReady;
}
API cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) {
  (void)flags;
  INIT();
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  rv_stream_wait_event(rv_stream_resolve(s), e);
  return cudaSuccess;
}
API cudaError_t cudaStreamGetPriority(cudaStream_t s, int *p) { INIT(); *p = rv_stream_resolve(s)->priority; return cudaSuccess; }
API cudaError_t cudaStreamGetFlags(cudaStream_t s, unsigned int *f) { INIT(); *f = rv_stream_resolve(s)->flags; return cudaSuccess; }
API cudaError_t cudaStreamGetId(cudaStream_t s, unsigned long long *id) { INIT(); *id = rv_stream_resolve(s)->id; return cudaSuccess; }
API cudaError_t cudaStreamGetDevice(cudaStream_t s, int *dev) { INIT(); *dev = rv_stream_resolve(s)->device; return cudaSuccess; }

API cudaError_t cudaStreamAddCallback(cudaStream_t s, cudaStreamCallback_t cb, void *user, unsigned int flags) {
  (void)flags;
  INIT();
  /* NOTE: nothing executes asynchronously here, so the stream's prior work is (virtually)
   * done from the host's point of view once the time warp makes it wait; run it inline. */
  cb(s, cudaSuccess, user);
  return cudaSuccess;
}
API cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void *user) {
  (void)s;
  INIT();
  fn(user);
  return cudaSuccess;
}

API cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode) {
  INIT();
  return rv_begin_capture(rv_stream_resolve(s), (int)mode) ? fail(cudaErrorIllegalState) : cudaSuccess;
}
API cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
  INIT();
  struct CUstream_st *st = rv_stream_resolve(s);
  if (!st->capture) return fail(cudaErrorIllegalState);
  *graph = (cudaGraph_t)rv_end_capture(st);
  return cudaSuccess;
}
API cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *status) {
  INIT();
  *status = rv_stream_resolve(s)->capture ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
API cudaError_t cudaStreamGetCaptureInfo(cudaStream_t s, enum cudaStreamCaptureStatus *status, unsigned long long *id,
                                         cudaGraph_t *graph, const cudaGraphNode_t **deps, const cudaGraphEdgeData **edges,
                                         size_t *ndeps) {
  INIT();
  struct CUstream_st *st = rv_stream_resolve(s);
  if (status) *status = st->capture ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  if (id) *id = st->capture_id;
  if (graph) *graph = (cudaGraph_t)st->capture;
  if (deps) *deps = NULL;
  if (edges) *edges = NULL;
  if (ndeps) *ndeps = 0;
  return cudaSuccess;
}
API cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode *mode) {
  INIT();
  static __thread enum cudaStreamCaptureMode cur = cudaStreamCaptureModeGlobal;
  enum cudaStreamCaptureMode old = cur;
  cur = *mode;
  *mode = old;
  return cudaSuccess;
}

/* ---------------------------------------------------------------------- events */

API cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
  INIT();
  if (!e) return fail(cudaErrorInvalidValue);
  struct CUevent_st *ev = calloc(1, sizeof *ev);
  ev->flags = flags;
  ev->device = rv_current_device();
  *e = ev;
  return cudaSuccess;
}
API cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
API cudaError_t cudaEventDestroy(cudaEvent_t e) { INIT(); free(e); return cudaSuccess; }
API cudaError_t cudaEventRecordWithFlags(cudaEvent_t e, cudaStream_t s, unsigned int flags) {
  (void)flags;
  INIT();
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  rv_event_record(e, rv_stream_resolve(s));
  return cudaSuccess;
}
API cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) { return cudaEventRecordWithFlags(e, s, 0); }
API cudaError_t cudaEventQuery(cudaEvent_t e) {
  INIT();
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  return rv_event_done(e) ? cudaSuccess : cudaErrorNotReady;
}
API cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  INIT();
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  rv_event_sync(e);
  rv_periodic_flush();
  return cudaSuccess;
}
API cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
  INIT();
  if (!ms || !start || !end) return fail(cudaErrorInvalidValue);
  if (!start->recorded || !end->recorded) return fail(cudaErrorInvalidResourceHandle);
  if ((start->flags | end->flags) & cudaEventDisableTiming) return fail(cudaErrorInvalidResourceHandle);
  *ms = (float)rv_event_elapsed_ms(start, end);
  return cudaSuccess;
}

/* ---------------------------------------------------------------------- graphs */

API cudaError_t cudaGraphCreate(cudaGraph_t *g, unsigned int flags) { (void)flags; INIT(); *g = (cudaGraph_t)rv_graph_new(); return cudaSuccess; }
API cudaError_t cudaGraphDestroy(cudaGraph_t g) { INIT(); rv_graph_free((rv_graph *)g); return cudaSuccess; }
API cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags) {
  (void)flags;
  INIT();
  if (!x || !g) return fail(cudaErrorInvalidValue);
  *x = (cudaGraphExec_t)rv_graph_instantiate((rv_graph *)g);
  return cudaSuccess;
}
API cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags) {
  return cudaGraphInstantiate(x, g, flags);
}
API cudaError_t cudaGraphInstantiateWithParams(cudaGraphExec_t *x, cudaGraph_t g, cudaGraphInstantiateParams *p) {
  cudaError_t e = cudaGraphInstantiate(x, g, p ? p->flags : 0);
  if (p) { p->result_out = cudaGraphInstantiateSuccess; p->errNode_out = NULL; }
  return e;
}
API cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x) { INIT(); rv_graph_free((rv_graph *)x); return cudaSuccess; }
API cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s) {
  INIT();
  if (!x) return fail(cudaErrorInvalidValue);
  rv_graph_launch((rv_graph *)x, rv_stream_resolve(s));
  rv_periodic_flush(); /* a graph-replay-only loop never reaches a stream sync */
  return cudaSuccess;
}
API cudaError_t cudaGraphUpload(cudaGraphExec_t x, cudaStream_t s) { (void)x; (void)s; INIT(); return cudaSuccess; }
API cudaError_t cudaGraphGetNodes(cudaGraph_t g, cudaGraphNode_t *nodes, size_t *n) {
  INIT();
  /* Node handles are not modelled; report the count, and no handles. */
  if (!nodes && n) *n = ((rv_graph *)g)->n;
  else if (n) *n = 0;
  return cudaSuccess;
}
API cudaError_t cudaGraphDebugDotPrint(cudaGraph_t g, const char *path, unsigned int flags) {
  (void)flags;
  INIT();
  FILE *f = fopen(path, "w");
  if (!f) return fail(cudaErrorInvalidValue);
  rv_graph *gr = (rv_graph *)g;
  fprintf(f, "digraph revati_graph_%llu {\n", (unsigned long long)gr->id);
  for (size_t i = 0; i < gr->n; i++) {
    char d[512];
    rv_op_describe(&gr->nodes[i], d, sizeof d);
    for (char *c = d; *c; c++) if (*c == '"') *c = '\'';
    fprintf(f, "  n%zu [label=\"%s\"];%s", i, d, i ? "" : "\n");
    if (i) fprintf(f, "  n%zu -> n%zu;\n", i - 1, i);
  }
  fprintf(f, "}\n");
  fclose(f);
  return cudaSuccess;
}

/* --------------------------------------------------------------------- kernels */

/* A registered fat binary: the architecture the driver would load from it for our part. */
typedef struct {
  int binary_version; /* e.g. 80 for sm_80 SASS; 0 if unknown */
} rv_fatbin;

/* nvcc's wrapper around the fat binary, and the fat binary's own headers (public layout). */
typedef struct { int magic; int version; const unsigned long long *data; void *filename; } rv_fatbin_wrapper;
typedef struct { uint32_t magic; uint16_t version, header_size; uint64_t fat_size; } rv_fatbin_header;
typedef struct {
  uint16_t kind, version;   /* kind 1 = PTX, 2 = ELF (SASS) */
  uint32_t header_size;
  uint64_t padded_payload_size;
  uint32_t payload_size, unknown0, unknown1;
  uint32_t sm_version;      /* offset 28, e.g. 90 for sm_90 */
} rv_fatbin_entry;

/* The driver loads the newest SASS of the device's major version not newer than the device,
 * else JIT-compiles the newest PTX not newer than the device. */
static int select_binary(const void *fat_cubin, int cc) {
  const rv_fatbin_wrapper *w = fat_cubin;
  if (!w || w->magic != 0x466243b1 || !w->data) return 0;
  const rv_fatbin_header *h = (const rv_fatbin_header *)w->data;
  if (h->magic != 0xBA55ED50u) return 0;
  const uint8_t *p = (const uint8_t *)h + h->header_size, *end = p + h->fat_size;
  int best_sass = 0, best_ptx = 0;
  while (p + sizeof(rv_fatbin_entry) <= end) {
    const rv_fatbin_entry *e = (const rv_fatbin_entry *)p;
    int sm = (int)e->sm_version;
    if (e->kind == 2 && sm / 10 == cc / 10 && sm <= cc && sm > best_sass) best_sass = sm;
    if (e->kind == 1 && sm <= cc && sm > best_ptx) best_ptx = sm;
    if (!e->header_size) break;
    p += e->header_size + e->padded_payload_size;
  }
  return best_sass ? best_sass : best_ptx;
}

API void **__cudaRegisterFatBinary(void *fatCubin) {
  rv_ensure_init();
  rv_fatbin *f = calloc(1, sizeof *f);
  const rv_gpu_spec *g = rv_gpu;
  f->binary_version = select_binary(fatCubin, g->cc_major * 10 + g->cc_minor);
  RV_LOG(RV_LOG_DEBUG, "fat binary %p: loads sm_%d", fatCubin, f->binary_version);
  return (void **)f;
}
API void __cudaRegisterFatBinaryEnd(void **handle) { (void)handle; }
API void __cudaUnregisterFatBinary(void **handle) { (void)handle; /* kernels stay known; addresses may be reused only after dlclose */ }
API char __cudaInitModule(void **handle) { (void)handle; return 0; }

API void __cudaRegisterFunction(void **handle, const char *hostFun, char *deviceFun, const char *deviceName,
                                int thread_limit, uint3 *tid, uint3 *bid, dim3 *bDim, dim3 *gDim, int *wSize) {
  (void)deviceName; (void)thread_limit; (void)tid; (void)bid; (void)bDim; (void)gDim; (void)wSize;
  rv_ensure_init();
  rv_kernel *k = rv_kernel_register(hostFun, deviceFun);
  k->binary_version = handle ? ((rv_fatbin *)handle)->binary_version : 0;
}

API void __cudaRegisterVar(void **handle, char *hostVar, char *deviceAddress, const char *deviceName, int ext,
                           size_t size, int constant, int global) {
  (void)handle; (void)deviceAddress; (void)deviceName; (void)ext; (void)constant; (void)global;
  rv_ensure_init();
  pthread_mutex_lock(&rv_sym_lock);
  if (rv_nsymbols == rv_capsymbols) {
    rv_capsymbols = rv_capsymbols ? 2 * rv_capsymbols : 256;
    rv_symbols = realloc(rv_symbols, rv_capsymbols * sizeof *rv_symbols);
  }
  rv_symbols[rv_nsymbols++] = (rv_symbol){hostVar, NULL, size};
  pthread_mutex_unlock(&rv_sym_lock);
}
API void __cudaRegisterManagedVar(void **handle, void **hostVarPtrAddress, char *deviceAddress,
                                  const char *deviceName, int ext, size_t size, int constant, int global) {
  __cudaRegisterVar(handle, (char *)hostVarPtrAddress, deviceAddress, deviceName, ext, size, constant, global);
}
API void __cudaRegisterHostVar(void **handle, const char *deviceName, char *hostVar, size_t size) {
  __cudaRegisterVar(handle, hostVar, NULL, deviceName, 0, size, 0, 0);
}

typedef struct { dim3 grid, block; size_t smem; void *stream; } rv_call_config;
static __thread rv_call_config rv_cfg_stack[8];
static __thread int rv_cfg_depth;

API unsigned __cudaPushCallConfiguration(dim3 gridDim, dim3 blockDim, size_t sharedMem, void *stream) {
  if (rv_cfg_depth < 8) rv_cfg_stack[rv_cfg_depth] = (rv_call_config){gridDim, blockDim, sharedMem, stream};
  rv_cfg_depth++;
  return 0;
}
API cudaError_t __cudaPopCallConfiguration(dim3 *gridDim, dim3 *blockDim, size_t *sharedMem, void *stream) {
  if (rv_cfg_depth <= 0) return cudaErrorMissingConfiguration;
  rv_cfg_depth--;
  if (rv_cfg_depth < 8) {
    rv_call_config *c = &rv_cfg_stack[rv_cfg_depth];
    *gridDim = c->grid; *blockDim = c->block; *sharedMem = c->smem; *(void **)stream = c->stream;
  }
  return cudaSuccess;
}

static inline void launch(rv_kernel *k, dim3 g, dim3 b, size_t smem, cudaStream_t stream, void **args) {
  rv_op op;
  if (rv_kernel_as_gemm(k, args, &op)) {
    rv_submit(rv_stream_resolve(stream), &op);
    return;
  }
  op.kind = RV_OP_KERNEL;
  op.api = 0;
  op.u.kernel.k = k;
  op.u.kernel.grid[0] = g.x; op.u.kernel.grid[1] = g.y; op.u.kernel.grid[2] = g.z;
  op.u.kernel.block[0] = b.x; op.u.kernel.block[1] = b.y; op.u.kernel.block[2] = b.z;
  op.u.kernel.smem = (uint32_t)smem;
  rv_submit(rv_stream_resolve(stream), &op);
}

static rv_kernel *kernel_for(const void *func) {
  rv_kernel *k = rv_kernel_by_host_fun(func);
  if (!k) {
    /* A host stub we never saw registered (should not happen): remember it by address. */
    char name[64];
    snprintf(name, sizeof name, "unregistered_kernel_%p", func);
    k = rv_kernel_register(func, name);
  }
  return k;
}

API cudaError_t __cudaGetKernel(cudaKernel_t *kernel, const void *func) {
  rv_ensure_init();
  *kernel = (cudaKernel_t)kernel_for(func);
  return cudaSuccess;
}
API cudaError_t __cudaLaunchKernel(cudaKernel_t kernel, dim3 g, dim3 b, void **args, size_t smem, cudaStream_t s) {
  launch((rv_kernel *)kernel, g, b, smem, s, args);
  return cudaSuccess;
}
API cudaError_t __cudaLaunchKernel_ptsz(cudaKernel_t kernel, dim3 g, dim3 b, void **args, size_t smem, cudaStream_t s) {
  return __cudaLaunchKernel(kernel, g, b, args, smem, s);
}
API cudaError_t cudaLaunchKernel(const void *func, dim3 g, dim3 b, void **args, size_t smem, cudaStream_t s) {
  INIT();
  launch(kernel_for(func), g, b, smem, s, args);
  return cudaSuccess;
}
API cudaError_t cudaLaunchCooperativeKernel(const void *func, dim3 g, dim3 b, void **args, size_t smem, cudaStream_t s) {
  return cudaLaunchKernel(func, g, b, args, smem, s);
}
API cudaError_t cudaLaunchKernelExC(const cudaLaunchConfig_t *cfg, const void *func, void **args) {
  INIT();
  launch(kernel_for(func), cfg->gridDim, cfg->blockDim, cfg->dynamicSmemBytes, cfg->stream, args);
  return cudaSuccess;
}

API cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes *a, const void *func) {
  INIT();
  memset(a, 0, sizeof *a);
  const rv_gpu_spec *g = rv_devices[rv_current_device()].spec;
  rv_kernel *k = rv_kernel_by_host_fun(func);
  a->maxThreadsPerBlock = 1024;
  a->numRegs = 32;
  a->maxDynamicSharedSizeBytes = 49152;
  a->binaryVersion = k && k->binary_version ? k->binary_version : g->cc_major * 10 + g->cc_minor;
  a->ptxVersion = a->binaryVersion;
  a->preferredShmemCarveout = -1;
  return cudaSuccess;
}
API cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value) {
  (void)func; (void)attr; (void)value; INIT(); return cudaSuccess;
}
API cudaError_t cudaFuncSetCacheConfig(const void *func, enum cudaFuncCache c) { (void)func; (void)c; INIT(); return cudaSuccess; }
API cudaError_t cudaFuncGetName(const char **name, const void *func) {
  INIT();
  rv_kernel *k = rv_kernel_by_host_fun(func);
  if (!k) return fail(cudaErrorInvalidDeviceFunction);
  *name = k->mangled;
  return cudaSuccess;
}
API cudaError_t cudaGetFuncBySymbol(cudaFunction_t *f, const void *symbol) {
  INIT();
  *f = (cudaFunction_t)kernel_for(symbol);
  return cudaSuccess;
}

API cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *n, const void *func, int blockSize,
                                                                       size_t smem, unsigned int flags) {
  (void)func; (void)flags;
  INIT();
  *n = rv_occupancy(rv_current_device(), blockSize, smem);
  return cudaSuccess;
}
API cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, const void *func, int blockSize, size_t smem) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(n, func, blockSize, smem, 0);
}

/* ------------------------------------------------------------- driver entry points */

API cudaError_t cudaGetDriverEntryPointByVersion(const char *symbol, void **fn, unsigned int version,
                                                 unsigned long long flags, enum cudaDriverEntryPointQueryResult *st) {
  INIT();
  void *p = rv_lookup_driver_symbol(symbol, (int)version, (flags & cudaEnablePerThreadDefaultStream) != 0);
  if (fn) *fn = p;
  if (st) *st = p ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
  return p ? cudaSuccess : fail(cudaErrorSymbolNotFound);
}
API cudaError_t cudaGetDriverEntryPoint(const char *symbol, void **fn, unsigned long long flags,
                                        enum cudaDriverEntryPointQueryResult *st) {
  return cudaGetDriverEntryPointByVersion(symbol, fn, 13000, flags, st);
}

API cudaError_t cudaProfilerStart(void) { return cudaSuccess; }
API cudaError_t cudaProfilerStop(void) { return cudaSuccess; }
API cudaError_t cudaCtxResetPersistingL2Cache(void) { return cudaSuccess; }

/* IPC handles: the 64-byte handle carries the pointer; every process of a deployment
 * sees the same virtual addresses only within itself, so opening returns fresh bulk memory
 * of the same size. */
API cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t *h, void *dev) {
  INIT();
  rv_alloc_info info;
  if (rv_classify(dev, &info) != RV_MEM_DEVICE) return fail(cudaErrorInvalidValue);
  memset(h, 0, sizeof *h);
  uint64_t size = info.size;
  memcpy(h->reserved, &size, sizeof size);
  return cudaSuccess;
}
API cudaError_t cudaIpcOpenMemHandle(void **dev, cudaIpcMemHandle_t h, unsigned int flags) {
  (void)flags;
  uint64_t size;
  memcpy(&size, h.reserved, sizeof size);
  INIT();
  /* The peer's memory lives on the peer's device: map it as a bulk range outside our capacity. */
  return rv_dev_malloc(rv_current_device(), size ? size : 1, dev) ? fail(cudaErrorMemoryAllocation) : cudaSuccess;
}
API cudaError_t cudaIpcCloseMemHandle(void *dev) { INIT(); rv_dev_free(dev); return cudaSuccess; }
API cudaError_t cudaIpcGetEventHandle(cudaIpcEventHandle_t *h, cudaEvent_t e) { (void)e; INIT(); memset(h, 0, sizeof *h); return cudaSuccess; }
API cudaError_t cudaIpcOpenEventHandle(cudaEvent_t *e, cudaIpcEventHandle_t h) { (void)h; return cudaEventCreateWithFlags(e, cudaEventDisableTiming); }
