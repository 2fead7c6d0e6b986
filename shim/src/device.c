/* Virtual devices: the catalog part chosen by REVATI_GPU, REVATI_NUM_GPUS of them on the
 * virtual node, filtered by CUDA_VISIBLE_DEVICES for the CUDA APIs (NVML sees them all). */
#define _GNU_SOURCE
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

const rv_gpu_spec *rv_gpu;
int rv_num_physical;
int rv_num_visible;
rv_device rv_devices[RV_MAX_DEVICES];
rv_device rv_physical[RV_MAX_DEVICES];
uint64_t rv_context_reserve = 536870912ULL; /* ~0.5 GiB: a CUDA context plus cuBLAS workspace */

static __thread int rv_cur_dev;

int rv_current_device(void) { return rv_cur_dev; }
void rv_set_current_device(int dev) { rv_cur_dev = dev; }

rv_device *rv_device_get(int dev) {
  if (dev < 0 || dev >= rv_num_visible) return NULL;
  return &rv_devices[dev];
}

/* FNV-1a, for deterministic UUIDs per (part, node, index). */
static uint64_t fnv1a(const char *s, uint64_t h) {
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
  return h;
}

static void make_physical(int i) {
  rv_device *d = &rv_physical[i];
  d->physical = i;
  d->spec = rv_gpu;
  const char *node = getenv("REVATI_NODE_NAME");
  char seed[128];
  snprintf(seed, sizeof seed, "%s/%s/%d", rv_gpu->key, node ? node : "node0", i);
  uint64_t a = fnv1a(seed, 1469598103934665603ULL), b = fnv1a(seed, a);
  snprintf(d->uuid, sizeof d->uuid, "GPU-%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32),
           (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xffff, (unsigned)(b >> 48) & 0xffff,
           (unsigned long long)(b & 0xffffffffffffULL));
  /* Bus numbers of an 8-GPU HGX board. */
  static const int buses[] = {0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb};
  d->pci_bus = i < 8 ? buses[i] : 0xe0 + i;
  snprintf(d->pci_bus_id, sizeof d->pci_bus_id, "00000000:%02X:00.0", d->pci_bus);
  d->capacity = rv_gpu->memory_bytes - rv_context_reserve;
  const char *u = d->uuid + 4;
  for (int b = 0, j = 0; u[j] && b < 16; j++) {
    unsigned v;
    if (u[j] != '-' && sscanf(u + j, "%2x", &v) == 1) { d->uuid_bytes[b++] = (uint8_t)v; j++; }
  }
}

void rv_devices_init(void) {
  const char *key = getenv("REVATI_GPU");
  rv_gpu = &rv_catalog[0];
  if (key && *key) {
    int found = 0;
    for (int i = 0; i < rv_catalog_len; i++)
      if (strcmp(rv_catalog[i].key, key) == 0) { rv_gpu = &rv_catalog[i]; found = 1; }
    if (!found) rv_log(RV_LOG_ERROR, "REVATI_GPU=%s is not in the catalog; using %s", key, rv_gpu->key);
  }
  const char *n = getenv("REVATI_NUM_GPUS");
  rv_num_physical = n ? atoi(n) : rv_gpu->max_gpus_per_node;
  if (rv_num_physical < 1) rv_num_physical = 1;
  if (rv_num_physical > RV_MAX_DEVICES) rv_num_physical = RV_MAX_DEVICES;
  for (int i = 0; i < rv_num_physical; i++) make_physical(i);

  const char *vis = getenv("CUDA_VISIBLE_DEVICES");
  rv_num_visible = 0;
  if (vis) {
    /* Indices or UUID prefixes, comma separated; parsing stops at the first invalid entry,
     * as the driver does. */
    char buf[512];
    snprintf(buf, sizeof buf, "%s", vis);
    for (char *tok = strtok(buf, ","); tok && rv_num_visible < RV_MAX_DEVICES; tok = strtok(NULL, ",")) {
      while (*tok == ' ') tok++;
      int idx = -1;
      if (strncmp(tok, "GPU-", 4) == 0) {
        for (int i = 0; i < rv_num_physical; i++)
          if (strncmp(rv_physical[i].uuid, tok, strlen(tok)) == 0) idx = i;
      } else {
        char *end;
        long v = strtol(tok, &end, 10);
        if (end != tok && v >= 0 && v < rv_num_physical) idx = (int)v;
      }
      if (idx < 0) break;
      rv_devices[rv_num_visible++] = rv_physical[idx];
    }
  } else {
    for (int i = 0; i < rv_num_physical; i++) rv_devices[rv_num_visible++] = rv_physical[i];
  }
}

int rv_occupancy(int dev, int block_size, size_t smem) {
  const rv_gpu_spec *g = rv_devices[dev].spec;
  if (block_size <= 0) return 0;
  int by_threads = g->max_threads_per_sm / block_size;
  int by_smem = smem ? (int)((size_t)g->smem_per_sm / (smem + 1024)) : 32;
  int n = by_threads < by_smem ? by_threads : by_smem;
  return n > 32 ? 32 : n;
}

/* CUdevice_attribute values (identical numbers to cudaDeviceAttr). */
int rv_device_attribute(int dev, int attr, int *value) {
  rv_device *d = rv_device_get(dev);
  if (!d || !value) return -1;
  const rv_gpu_spec *g = d->spec;
  int v;
  switch ((CUdevice_attribute)attr) {
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: v = 64; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: v = 2147483647; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: v = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: v = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: v = 49152; break;
    case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: v = 32; break;
    case CU_DEVICE_ATTRIBUTE_MAX_PITCH: v = 2147483647; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: v = g->sm_clock_mhz * 1000; break;
    case CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT: v = 512; break;
    case CU_DEVICE_ATTRIBUTE_GPU_OVERLAP: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: v = g->sm_count; break;
    case CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_INTEGRATED: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_MODE: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_ECC_ENABLED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: v = d->pci_bus; break;
    case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_TCC_DRIVER: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: v = g->mem_clock_mhz * 1000; break;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: v = g->mem_bus_width_bits; break;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: v = (int)g->l2_bytes; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: v = g->max_threads_per_sm; break;
    case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: v = 2; break;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: v = g->cc_major; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: v = g->cc_minor; break;
    case CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_L1_CACHE_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_LOCAL_L1_CACHE_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: v = g->smem_per_sm; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: v = g->regs_per_sm; break;
    case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD_GROUP_ID: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO: v = 2; break;
    case CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_PREEMPTION_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: v = g->smem_per_block_optin; break;
    case CU_DEVICE_ATTRIBUTE_CAN_FLUSH_REMOTE_WRITES: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_DIRECT_MANAGED_MEM_ACCESS_FROM_HOST: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: v = 32; break;
    case CU_DEVICE_ATTRIBUTE_GENERIC_COMPRESSION_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE: v = (int)(g->l2_bytes * 3 / 4); break;
    case CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE: v = 134213632; break;
    case CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK: v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_SPARSE_CUDA_ARRAY_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH: v = g->cc_major >= 9; break;
    case CU_DEVICE_ATTRIBUTE_DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_IPC_EVENT_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_MEM_SYNC_DOMAIN_COUNT: v = g->cc_major >= 9 ? 4 : 1; break;
    case CU_DEVICE_ATTRIBUTE_TENSOR_MAP_ACCESS_SUPPORTED: v = g->cc_major >= 9; break;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_FUNCTION_POINTERS: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_NUMA_CONFIG: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_NUMA_ID: v = -1; break;
    case CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID: v = d->physical < 4 ? 0 : 1; break;
    default: v = 0; break;
  }
  *value = v;
  return 0;
}
