/* The CUDA driver API (libcuda.so.1) over the virtual devices.
 *
 * Reached three ways: by symbol (vLLM's _C links libcuda directly; Triton links -lcuda),
 * by dlopen("libcuda.so.1") which finds this same object through a symlink, and through
 * cuGetProcAddress / cudaGetDriverEntryPoint, which look names up in entrypoints.def. */
#define _GNU_SOURCE
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

#define API RV_EXPORT
#define INIT() rv_ensure_init()

struct CUctx_st { int device; };
static struct CUctx_st rv_ctx[RV_MAX_DEVICES];
static __thread int rv_ctx_set;

static CUcontext primary(int dev) {
  rv_ctx[dev].device = dev;
  return &rv_ctx[dev];
}

API CUresult cuInit(unsigned int flags) { (void)flags; INIT(); return rv_num_visible ? CUDA_SUCCESS : CUDA_ERROR_NO_DEVICE; }
API CUresult cuDriverGetVersion(int *v) { if (!v) return CUDA_ERROR_INVALID_VALUE; *v = 13000; return CUDA_SUCCESS; }

API CUresult cuGetErrorString(CUresult e, const char **s) {
  switch (e) {
    case CUDA_SUCCESS: *s = "no error"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "invalid argument"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "out of memory"; break;
    case CUDA_ERROR_NOT_SUPPORTED: *s = "operation not supported"; break;
    case CUDA_ERROR_NOT_FOUND: *s = "named symbol not found"; break;
    case CUDA_ERROR_INVALID_DEVICE: *s = "invalid device ordinal"; break;
    case CUDA_ERROR_NOT_READY: *s = "device not ready"; break;
    default: *s = "unknown error";
  }
  return CUDA_SUCCESS;
}
API CUresult cuGetErrorName(CUresult e, const char **s) {
  switch (e) {
    case CUDA_SUCCESS: *s = "CUDA_SUCCESS"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case CUDA_ERROR_NOT_SUPPORTED: *s = "CUDA_ERROR_NOT_SUPPORTED"; break;
    case CUDA_ERROR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
    case CUDA_ERROR_INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
    case CUDA_ERROR_NOT_READY: *s = "CUDA_ERROR_NOT_READY"; break;
    default: *s = "CUDA_ERROR_UNKNOWN";
  }
  return CUDA_SUCCESS;
}

API CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags,
                              CUdriverProcAddressQueryResult *status) {
  INIT();
  void *p = rv_lookup_driver_symbol(symbol, version, (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0);
  if (pfn) *pfn = p;
  if (status) *status = p ? CU_GET_PROC_ADDRESS_SUCCESS : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  return p ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

/* --------------------------------------------------------------------- devices */

API CUresult cuDeviceGetCount(int *n) { INIT(); *n = rv_num_visible; return CUDA_SUCCESS; }
API CUresult cuDeviceGet(CUdevice *d, int ordinal) {
  INIT();
  if (!rv_device_get(ordinal)) return CUDA_ERROR_INVALID_DEVICE;
  *d = ordinal;
  return CUDA_SUCCESS;
}
API CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
  INIT();
  rv_device *d = rv_device_get(dev);
  if (!d) return CUDA_ERROR_INVALID_DEVICE;
  snprintf(name, (size_t)len, "%s", d->spec->name);
  return CUDA_SUCCESS;
}
API CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev) {
  INIT();
  rv_device *d = rv_device_get(dev);
  if (!d) return CUDA_ERROR_INVALID_DEVICE;
  memcpy(uuid->bytes, d->uuid_bytes, sizeof d->uuid_bytes);
  return CUDA_SUCCESS;
}
API CUresult cuDeviceTotalMem(size_t *bytes, CUdevice dev) {
  INIT();
  rv_device *d = rv_device_get(dev);
  if (!d) return CUDA_ERROR_INVALID_DEVICE;
  *bytes = d->spec->memory_bytes;
  return CUDA_SUCCESS;
}
API CUresult cuDeviceGetAttribute(int *v, CUdevice_attribute attr, CUdevice dev) {
  INIT();
  return rv_device_attribute(dev, (int)attr, v) ? CUDA_ERROR_INVALID_DEVICE : CUDA_SUCCESS;
}
API CUresult cuDeviceComputeCapability(int *major, int *minor, CUdevice dev) {
  INIT();
  rv_device *d = rv_device_get(dev);
  if (!d) return CUDA_ERROR_INVALID_DEVICE;
  *major = d->spec->cc_major;
  *minor = d->spec->cc_minor;
  return CUDA_SUCCESS;
}
API CUresult cuDeviceGetPCIBusId(char *id, int len, CUdevice dev) {
  INIT();
  rv_device *d = rv_device_get(dev);
  if (!d) return CUDA_ERROR_INVALID_DEVICE;
  snprintf(id, (size_t)len, "%s", d->pci_bus_id);
  return CUDA_SUCCESS;
}
API CUresult cuDeviceCanAccessPeer(int *can, CUdevice dev, CUdevice peer) { INIT(); *can = dev != peer; return CUDA_SUCCESS; }

/* -------------------------------------------------------------------- contexts */

API CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev) {
  INIT();
  if (!rv_device_get(dev)) return CUDA_ERROR_INVALID_DEVICE;
  *ctx = primary(dev);
  return CUDA_SUCCESS;
}
API CUresult cuDevicePrimaryCtxRelease(CUdevice dev) { (void)dev; return CUDA_SUCCESS; }
API CUresult cuDevicePrimaryCtxReset(CUdevice dev) { (void)dev; return CUDA_SUCCESS; }
API CUresult cuDevicePrimaryCtxSetFlags(CUdevice dev, unsigned int flags) { (void)dev; (void)flags; return CUDA_SUCCESS; }
API CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int *flags, int *active) {
  (void)dev;
  INIT();
  if (flags) *flags = 0;
  if (active) *active = 1;
  return CUDA_SUCCESS;
}
API CUresult cuCtxGetCurrent(CUcontext *ctx) {
  INIT();
  /* The runtime made the current device's primary context current on its first call. */
  *ctx = primary(rv_current_device());
  return CUDA_SUCCESS;
}
API CUresult cuCtxSetCurrent(CUcontext ctx) {
  INIT();
  if (ctx) rv_set_current_device(ctx->device);
  rv_ctx_set = 1;
  return CUDA_SUCCESS;
}
API CUresult cuCtxPushCurrent(CUcontext ctx) { return cuCtxSetCurrent(ctx); }
API CUresult cuCtxPopCurrent(CUcontext *ctx) { INIT(); if (ctx) *ctx = primary(rv_current_device()); return CUDA_SUCCESS; }
API CUresult cuCtxGetDevice(CUdevice *dev) { INIT(); *dev = rv_current_device(); return CUDA_SUCCESS; }
API CUresult cuCtxSynchronize(void) { INIT(); rv_device_sync(rv_current_device()); return CUDA_SUCCESS; }
API CUresult cuCtxGetLimit(size_t *v, CUlimit limit) { (void)limit; INIT(); *v = 0; return CUDA_SUCCESS; }
API CUresult cuCtxSetLimit(CUlimit limit, size_t v) { (void)limit; (void)v; INIT(); return CUDA_SUCCESS; }
API CUresult cuCtxGetStreamPriorityRange(int *least, int *greatest) {
  if (least) *least = 0;
  if (greatest) *greatest = -5;
  return CUDA_SUCCESS;
}
API CUresult cuCtxGetApiVersion(CUcontext ctx, unsigned int *v) { (void)ctx; *v = 13000; return CUDA_SUCCESS; }

/* --------------------------------------------------------------------- driver logs */
/* The driver's error-log API (CUDA 12.9+; torch 2.14 registers a callback at start-up). The
 * virtual driver writes no log messages: a callback is accepted and never called, the log
 * buffer is always empty. */
static char rv_log_callback_token;

API CUresult cuLogsRegisterCallback(CUlogsCallback callbackFunc, void *userData, CUlogsCallbackHandle *callback_out) {
  (void)userData;
  INIT();
  if (!callbackFunc) return CUDA_ERROR_INVALID_VALUE;
  if (callback_out) *callback_out = (CUlogsCallbackHandle)(void *)&rv_log_callback_token;
  return CUDA_SUCCESS;
}
API CUresult cuLogsUnregisterCallback(CUlogsCallbackHandle callback) {
  return callback ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
API CUresult cuLogsCurrent(CUlogIterator *iterator_out, unsigned int flags) {
  if (!iterator_out || flags) return CUDA_ERROR_INVALID_VALUE;
  *iterator_out = 0;
  return CUDA_SUCCESS;
}
API CUresult cuLogsDumpToFile(CUlogIterator *iterator, const char *pathToFile, unsigned int flags) {
  (void)iterator;
  if (!pathToFile || flags) return CUDA_ERROR_INVALID_VALUE;
  FILE *f = fopen(pathToFile, "w");
  if (!f) return CUDA_ERROR_INVALID_VALUE;
  fclose(f);
  return CUDA_SUCCESS;
}
API CUresult cuLogsDumpToMemory(CUlogIterator *iterator, char *buffer, size_t *size, unsigned int flags) {
  (void)iterator;
  if (!buffer || !size || flags) return CUDA_ERROR_INVALID_VALUE;
  if (*size) buffer[0] = '\0';
  *size = 0;
  return CUDA_SUCCESS;
}

/* --------------------------------------------------------------------- modules */

struct CUmod_st {
  struct CUfunc_st **funcs;
  size_t n;
  pthread_mutex_t lock;
};

API CUresult cuModuleLoadData(CUmodule *mod, const void *image) {
  (void)image;
  INIT();
  struct CUmod_st *m = calloc(1, sizeof *m);
  pthread_mutex_init(&m->lock, NULL);
  *mod = m;
  return CUDA_SUCCESS;
}
API CUresult cuModuleLoadDataEx(CUmodule *mod, const void *image, unsigned int n, CUjit_option *o, void **v) {
  (void)n; (void)o; (void)v;
  return cuModuleLoadData(mod, image);
}
API CUresult cuModuleLoad(CUmodule *mod, const char *fname) { return cuModuleLoadData(mod, fname); }
API CUresult cuModuleLoadFatBinary(CUmodule *mod, const void *fatbin) { return cuModuleLoadData(mod, fatbin); }
API CUresult cuModuleUnload(CUmodule mod) {
  INIT();
  /* Functions stay valid: graphs captured earlier may still reference them. */
  free(mod->funcs);
  free(mod);
  return CUDA_SUCCESS;
}
API CUresult cuModuleGetFunction(CUfunction *f, CUmodule mod, const char *name) {
  INIT();
  pthread_mutex_lock(&mod->lock);
  for (size_t i = 0; i < mod->n; i++)
    if (strcmp(mod->funcs[i]->k.mangled, name) == 0) { *f = mod->funcs[i]; pthread_mutex_unlock(&mod->lock); return CUDA_SUCCESS; }
  struct CUfunc_st *fn = (struct CUfunc_st *)rv_kernel_new(name, 1);
  mod->funcs = realloc(mod->funcs, (mod->n + 1) * sizeof *mod->funcs);
  mod->funcs[mod->n++] = fn;
  pthread_mutex_unlock(&mod->lock);
  *f = fn;
  return CUDA_SUCCESS;
}
API CUresult cuModuleGetGlobal(CUdeviceptr *dptr, size_t *bytes, CUmodule mod, const char *name) {
  (void)mod; (void)name;
  INIT();
  void *p;
  if (rv_dev_malloc(rv_current_device(), 256, &p)) return CUDA_ERROR_OUT_OF_MEMORY;
  if (dptr) *dptr = (CUdeviceptr)p;
  if (bytes) *bytes = 256;
  return CUDA_SUCCESS;
}

API CUresult cuFuncGetAttribute(int *v, CUfunction_attribute attr, CUfunction f) {
  INIT();
  const rv_gpu_spec *g = rv_devices[rv_current_device()].spec;
  switch (attr) {
    case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
    case CU_FUNC_ATTRIBUTE_NUM_REGS: *v = 32; break;
    case CU_FUNC_ATTRIBUTE_PTX_VERSION:
    case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *v = g->cc_major * 10 + g->cc_minor; break;
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *v = f && f->k.max_dynamic_smem ? f->k.max_dynamic_smem : 49152; break;
    case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: *v = -1; break;
    default: *v = 0;
  }
  return CUDA_SUCCESS;
}
API CUresult cuFuncSetAttribute(CUfunction f, CUfunction_attribute attr, int v) {
  INIT();
  if (f && attr == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) f->k.max_dynamic_smem = v;
  return CUDA_SUCCESS;
}
API CUresult cuFuncSetCacheConfig(CUfunction f, CUfunc_cache c) { (void)f; (void)c; return CUDA_SUCCESS; }
API CUresult cuFuncGetName(const char **name, CUfunction f) { *name = f->k.mangled; return CUDA_SUCCESS; }

API CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *n, CUfunction f, int blockSize, size_t smem) {
  (void)f;
  INIT();
  *n = rv_occupancy(rv_current_device(), blockSize, smem);
  return CUDA_SUCCESS;
}
API CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *n, CUfunction f, int blockSize, size_t smem,
                                                                   unsigned int flags) {
  (void)flags;
  return cuOccupancyMaxActiveBlocksPerMultiprocessor(n, f, blockSize, smem);
}
API CUresult cuOccupancyMaxActiveClusters(int *n, CUfunction f, const CUlaunchConfig *cfg) {
  (void)f;
  INIT();
  unsigned cluster = 1;
  for (unsigned i = 0; cfg && i < cfg->numAttrs; i++)
    if (cfg->attrs[i].id == CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION)
      cluster = cfg->attrs[i].value.clusterDim.x * cfg->attrs[i].value.clusterDim.y * cfg->attrs[i].value.clusterDim.z;
  *n = rv_devices[rv_current_device()].spec->sm_count / (int)(cluster ? cluster : 1);
  return CUDA_SUCCESS;
}

static void launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned smem, CUstream stream, void **params) {
  rv_op op;
  if (rv_kernel_as_gemm(&f->k, params, &op)) {
    op.api = 1;
    rv_submit(rv_stream_resolve(stream), &op);
    return;
  }
  op.kind = RV_OP_KERNEL;
  op.api = 1;
  op.u.kernel.k = &f->k;
  op.u.kernel.grid[0] = gx; op.u.kernel.grid[1] = gy; op.u.kernel.grid[2] = gz;
  op.u.kernel.block[0] = bx; op.u.kernel.block[1] = by; op.u.kernel.block[2] = bz;
  op.u.kernel.smem = smem;
  rv_submit(rv_stream_resolve(stream), &op);
}

API CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                            unsigned smem, CUstream s, void **params, void **extra) {
  (void)extra;
  INIT();
  if (!f) return CUDA_ERROR_INVALID_HANDLE;
  launch(f, gx, gy, gz, bx, by, bz, smem, s, params);
  return CUDA_SUCCESS;
}
API CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                       unsigned bz, unsigned smem, CUstream s, void **params) {
  return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, smem, s, params, NULL);
}
API CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra) {
  (void)extra;
  INIT();
  if (!f || !c) return CUDA_ERROR_INVALID_VALUE;
  launch(f, c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX, c->blockDimY, c->blockDimZ, c->sharedMemBytes, c->hStream,
         params);
  return CUDA_SUCCESS;
}

/* cuLibrary / cuKernel (context-independent loading, CUDA 12+). */
struct CUlib_st { struct CUmod_st *mod; };
API CUresult cuLibraryLoadData(CUlibrary *lib, const void *code, CUjit_option *jo, void **jv, unsigned int njo,
                               CUlibraryOption *lo, void **lv, unsigned int nlo) {
  (void)jo; (void)jv; (void)njo; (void)lo; (void)lv; (void)nlo;
  struct CUlib_st *l = calloc(1, sizeof *l);
  cuModuleLoadData(&l->mod, code);
  *lib = l;
  return CUDA_SUCCESS;
}
API CUresult cuLibraryUnload(CUlibrary lib) { cuModuleUnload(lib->mod); free(lib); return CUDA_SUCCESS; }
API CUresult cuLibraryGetKernel(CUkernel *k, CUlibrary lib, const char *name) {
  CUfunction f;
  CUresult r = cuModuleGetFunction(&f, lib->mod, name);
  *k = (CUkernel)f;
  return r;
}
API CUresult cuKernelGetFunction(CUfunction *f, CUkernel k) { *f = (CUfunction)k; return CUDA_SUCCESS; }

API CUresult cuTensorMapEncodeTiled(CUtensorMap *map, CUtensorMapDataType dt, cuuint32_t rank, void *addr,
                                    const cuuint64_t *dims, const cuuint64_t *strides, const cuuint32_t *box,
                                    const cuuint32_t *estrides, CUtensorMapInterleave il, CUtensorMapSwizzle sw,
                                    CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
  (void)dt; (void)rank; (void)dims; (void)strides; (void)box; (void)estrides; (void)il; (void)sw; (void)l2; (void)oob;
  /* The descriptor is opaque to the host and only read by kernels, which never run. */
  memset(map, 0, sizeof *map);
  memcpy(map, &addr, sizeof addr);
  return CUDA_SUCCESS;
}
API CUresult cuTensorMapEncodeIm2col(CUtensorMap *map, CUtensorMapDataType dt, cuuint32_t rank, void *addr,
                                     const cuuint64_t *dims, const cuuint64_t *strides, const int *lower,
                                     const int *upper, cuuint32_t channels, cuuint32_t pixels,
                                     const cuuint32_t *estrides, CUtensorMapInterleave il, CUtensorMapSwizzle sw,
                                     CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
  (void)dt; (void)rank; (void)dims; (void)strides; (void)lower; (void)upper; (void)channels; (void)pixels;
  (void)estrides; (void)il; (void)sw; (void)l2; (void)oob;
  memset(map, 0, sizeof *map);
  memcpy(map, &addr, sizeof addr);
  return CUDA_SUCCESS;
}

/* ---------------------------------------------------------------------- memory */

API CUresult cuMemAlloc(CUdeviceptr *p, size_t n) {
  INIT();
  void *q;
  int rc = rv_dev_malloc(rv_current_device(), n, &q);
  if (rc) return rc == -1 ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_ERROR_INVALID_VALUE;
  *p = (CUdeviceptr)q;
  return CUDA_SUCCESS;
}
API CUresult cuMemFree(CUdeviceptr p) { INIT(); return rv_dev_free((void *)p) ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS; }
API CUresult cuMemAllocHost(void **p, size_t n) { INIT(); return rv_host_alloc(n, p) ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_SUCCESS; }
API CUresult cuMemHostAlloc(void **p, size_t n, unsigned int flags) { (void)flags; return cuMemAllocHost(p, n); }
API CUresult cuMemFreeHost(void *p) { INIT(); return rv_host_free(p) ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS; }
API CUresult cuMemHostRegister(void *p, size_t n, unsigned int flags) {
  (void)flags;
  INIT();
  return rv_host_register(p, n) ? CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED : CUDA_SUCCESS;
}
API CUresult cuMemHostUnregister(void *p) { INIT(); return rv_host_unregister(p) ? CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED : CUDA_SUCCESS; }
API CUresult cuMemGetInfo(size_t *free_b, size_t *total_b) { INIT(); rv_mem_get_info(rv_current_device(), free_b, total_b); return CUDA_SUCCESS; }
API CUresult cuMemGetAddressRange(CUdeviceptr *base, size_t *size, CUdeviceptr p) {
  INIT();
  rv_alloc_info info;
  if (!rv_classify((void *)p, &info)) return CUDA_ERROR_NOT_FOUND;
  if (base) *base = info.base;
  if (size) *size = info.size;
  return CUDA_SUCCESS;
}

static void copy(void *dst, const void *src, size_t n, CUstream s) {
  struct CUstream_st *st = rv_stream_resolve(s);
  int dir = rv_copy_effect(dst, src, n);
  rv_op op = {.kind = RV_OP_MEMCPY, .api = 1};
  op.u.copy.bytes = n;
  op.u.copy.dir = (uint8_t)dir;
  if (st->capture) { op.u.copy.dst = dst; op.u.copy.src = src; }
  rv_submit(st, &op);
}
API CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) { INIT(); copy((void *)dst, (const void *)src, n, s); return CUDA_SUCCESS; }
API CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n) { return cuMemcpyAsync(dst, src, n, 0); }
API CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void *src, size_t n, CUstream s) { INIT(); copy((void *)dst, src, n, s); return CUDA_SUCCESS; }
API CUresult cuMemcpyHtoD(CUdeviceptr dst, const void *src, size_t n) { return cuMemcpyHtoDAsync(dst, src, n, 0); }
API CUresult cuMemcpyDtoHAsync(void *dst, CUdeviceptr src, size_t n, CUstream s) { INIT(); copy(dst, (const void *)src, n, s); return CUDA_SUCCESS; }
API CUresult cuMemcpyDtoH(void *dst, CUdeviceptr src, size_t n) { return cuMemcpyDtoHAsync(dst, src, n, 0); }
API CUresult cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) { INIT(); copy((void *)dst, (const void *)src, n, s); return CUDA_SUCCESS; }
API CUresult cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t n) { return cuMemcpyDtoDAsync(dst, src, n, 0); }

static void memset_op(void *dst, int value, size_t unit, size_t count, CUstream s) {
  struct CUstream_st *st = rv_stream_resolve(s);
  if (unit == 1) rv_memset_effect(dst, value, count);
  else if (value == 0) rv_memset_effect(dst, 0, count * unit);
  rv_op op = {.kind = RV_OP_MEMSET, .api = 1};
  op.u.memset.bytes = count * unit;
  rv_submit(st, &op);
}
API CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream s) { INIT(); memset_op((void *)d, v, 1, n, s); return CUDA_SUCCESS; }
API CUresult cuMemsetD8(CUdeviceptr d, unsigned char v, size_t n) { return cuMemsetD8Async(d, v, n, 0); }
API CUresult cuMemsetD32Async(CUdeviceptr d, unsigned int v, size_t n, CUstream s) { INIT(); memset_op((void *)d, (int)v, 4, n, s); return CUDA_SUCCESS; }
API CUresult cuMemsetD32(CUdeviceptr d, unsigned int v, size_t n) { return cuMemsetD32Async(d, v, n, 0); }

API CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attr, CUdeviceptr ptr) {
  INIT();
  rv_alloc_info info;
  int kind = rv_classify((void *)ptr, &info);
  if (!kind) return CUDA_ERROR_INVALID_VALUE;
  switch (attr) {
    case CU_POINTER_ATTRIBUTE_CONTEXT: *(CUcontext *)data = primary(info.device); break;
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
      *(unsigned *)data = kind == RV_MEM_DEVICE ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST; break;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: *(CUdeviceptr *)data = ptr; break;
    case CU_POINTER_ATTRIBUTE_HOST_POINTER: *(void **)data = kind == RV_MEM_HOST ? (void *)ptr : NULL; break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *(int *)data = info.device; break;
    case CU_POINTER_ATTRIBUTE_IS_MANAGED: *(unsigned *)data = 0; break;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: *(CUdeviceptr *)data = info.base; break;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE: *(size_t *)data = info.size; break;
    case CU_POINTER_ATTRIBUTE_BUFFER_ID: *(unsigned long long *)data = info.base; break;
    case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS: *(unsigned *)data = 1; break;
    case CU_POINTER_ATTRIBUTE_MAPPED: *(unsigned *)data = 1; break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}
API CUresult cuPointerGetAttributes(unsigned int n, CUpointer_attribute *attrs, void **data, CUdeviceptr ptr) {
  for (unsigned i = 0; i < n; i++)
    if (cuPointerGetAttribute(data[i], attrs[i], ptr) != CUDA_SUCCESS) memset(data[i], 0, sizeof(void *));
  return CUDA_SUCCESS;
}

/* --------------------------------------------------------------- streams, events */

API CUresult cuStreamCreate(CUstream *s, unsigned int flags) { INIT(); *s = rv_stream_create(rv_current_device(), flags, 0); return CUDA_SUCCESS; }
API CUresult cuStreamCreateWithPriority(CUstream *s, unsigned int flags, int prio) {
  INIT();
  *s = rv_stream_create(rv_current_device(), flags, prio);
  return CUDA_SUCCESS;
}
API CUresult cuStreamDestroy(CUstream s) { INIT(); if ((uintptr_t)s > 2) rv_stream_destroy(s); return CUDA_SUCCESS; }
API CUresult cuStreamSynchronize(CUstream s) { INIT(); rv_periodic_flush(); rv_stream_sync(rv_stream_resolve(s)); return CUDA_SUCCESS; }
API CUresult cuStreamQuery(CUstream s) { INIT(); return rv_stream_done(rv_stream_resolve(s)) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY; }
API CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned int flags) { (void)flags; INIT(); rv_stream_wait_event(rv_stream_resolve(s), e); return CUDA_SUCCESS; }
API CUresult cuStreamGetCtx(CUstream s, CUcontext *ctx) { INIT(); *ctx = primary(rv_stream_resolve(s)->device); return CUDA_SUCCESS; }
API CUresult cuEventCreate(CUevent *e, unsigned int flags) {
  INIT();
  struct CUevent_st *ev = calloc(1, sizeof *ev);
  ev->flags = flags;
  *e = ev;
  return CUDA_SUCCESS;
}
API CUresult cuEventDestroy(CUevent e) { free(e); return CUDA_SUCCESS; }
API CUresult cuEventRecord(CUevent e, CUstream s) { INIT(); rv_event_record(e, rv_stream_resolve(s)); return CUDA_SUCCESS; }
API CUresult cuEventRecordWithFlags(CUevent e, CUstream s, unsigned int flags) { (void)flags; return cuEventRecord(e, s); }
API CUresult cuEventQuery(CUevent e) { INIT(); return rv_event_done(e) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY; }
API CUresult cuEventSynchronize(CUevent e) { rv_event_sync(e); return CUDA_SUCCESS; }
API CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) {
  *ms = (float)rv_event_elapsed_ms(a, b);
  return CUDA_SUCCESS;
}
