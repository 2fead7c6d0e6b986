/* The name table of every exported entry point (entrypoints.def), lookups in it by name (for
 * cuGetProcAddress and cudaGetDriverEntryPoint), and the bookkeeping of the generated stubs
 * (stubs.c).
 *
 * NOTE: the table takes the address of every entry point, implemented or stubbed, so this
 * object refers to all the API files; it calls none of them. */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

/* Each entry point is declared with a dummy prototype here: this file includes no NVIDIA
 * header, so the address of every implemented or stubbed function can be taken. */
#define EP(lib, name, kind) extern void name(void);
#include "../entrypoints.def"
#undef EP

typedef struct {
  const char *name;
  void *addr;
  uint8_t lib;
} rv_entry;

#define EP(lib, name, kind) {#name, (void *)&name, RV_LIB_##lib},
static const rv_entry rv_entries[] = {
#include "../entrypoints.def"
};
#undef EP
#define RV_NUM_ENTRIES (sizeof(rv_entries) / sizeof(rv_entries[0]))

/* Sorted index over rv_entries for lookups by name, built at init. */
static uint16_t rv_sorted[RV_NUM_ENTRIES];
static _Atomic uint8_t rv_stub_logged[RV_NUM_ENTRIES];
static _Atomic uint64_t rv_stub_total;

static int cmp_entry(const void *a, const void *b) {
  return strcmp(rv_entries[*(const uint16_t *)a].name, rv_entries[*(const uint16_t *)b].name);
}

void rv_entries_init(void) {
  for (size_t i = 0; i < RV_NUM_ENTRIES; i++) rv_sorted[i] = (uint16_t)i;
  qsort(rv_sorted, RV_NUM_ENTRIES, sizeof rv_sorted[0], cmp_entry);
}

void *rv_lookup_entry(const char *name) {
  size_t lo = 0, hi = RV_NUM_ENTRIES;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(rv_entries[rv_sorted[mid]].name, name);
    if (c == 0) return rv_entries[rv_sorted[mid]].addr;
    if (c < 0) lo = mid + 1; else hi = mid;
  }
  return NULL;
}

void *rv_lookup_driver_symbol(const char *base, int cuda_version, int per_thread) {
  (void)cuda_version; /* callers of a CUDA 13 runtime want the newest ABI of each symbol */
  char buf[160];
  void *p;
  if (per_thread) {
    for (int v = 4; v >= 2; v--) {
      snprintf(buf, sizeof buf, "%s_v%d_ptds", base, v);
      if ((p = rv_lookup_entry(buf))) return p;
      snprintf(buf, sizeof buf, "%s_v%d_ptsz", base, v);
      if ((p = rv_lookup_entry(buf))) return p;
    }
    snprintf(buf, sizeof buf, "%s_ptds", base);
    if ((p = rv_lookup_entry(buf))) return p;
    snprintf(buf, sizeof buf, "%s_ptsz", base);
    if ((p = rv_lookup_entry(buf))) return p;
  }
  for (int v = 9; v >= 2; v--) {
    snprintf(buf, sizeof buf, "%s_v%d", base, v);
    if ((p = rv_lookup_entry(buf))) return p;
  }
  return rv_lookup_entry(base);
}

/* "Not supported" of each API, returned by the generated stubs. */
static const int rv_not_supported[] = {
    [RV_LIB_CUDART] = 801,   /* cudaErrorNotSupported */
    [RV_LIB_CUDA] = 801,     /* CUDA_ERROR_NOT_SUPPORTED */
    [RV_LIB_CUBLAS] = 15,    /* CUBLAS_STATUS_NOT_SUPPORTED */
    [RV_LIB_CUBLASLT] = 15,  /* CUBLAS_STATUS_NOT_SUPPORTED */
    [RV_LIB_NCCL] = 5,       /* ncclInvalidUsage: NCCL has no "not supported" code */
    [RV_LIB_NVML] = 3,       /* NVML_ERROR_NOT_SUPPORTED */
};

int rv_stub_hit(int index) {
  atomic_fetch_add_explicit(&rv_stub_total, 1, memory_order_relaxed);
  if (!atomic_exchange(&rv_stub_logged[index], 1))
    rv_log(RV_LOG_WARN, "unimplemented entry point %s called: returning not-supported",
           rv_entries[index].name);
  return rv_not_supported[rv_entries[index].lib];
}

uint64_t rv_stub_hits_total(void) { return atomic_load(&rv_stub_total); }
