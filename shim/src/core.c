/* Initialization, logging, generated stubs' bookkeeping and the entry-point name table. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

int rv_log_level = RV_LOG_WARN;
pthread_mutex_t rv_lock = PTHREAD_MUTEX_INITIALIZER;
rv_stats rv_global_stats;

void rv_devices_init(void);   /* device.c */
void rv_memory_init(void);    /* memory.c */
void rv_timeline_init(void);  /* timeline.c */
void rv_timewarp_init(void);  /* timewarp.c */

/* ------------------------------------------------------------------ name table */

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
  rv_ensure_init();
  atomic_fetch_add_explicit(&rv_stub_total, 1, memory_order_relaxed);
  if (!atomic_exchange(&rv_stub_logged[index], 1))
    rv_log(RV_LOG_WARN, "unimplemented entry point %s called: returning not-supported",
           rv_entries[index].name);
  return rv_not_supported[rv_entries[index].lib];
}

uint64_t rv_stub_hits_total(void) { return atomic_load(&rv_stub_total); }

/* -------------------------------------------------------------------- logging */

static int rv_log_fd = 2;

void rv_log(int level, const char *fmt, ...) {
  static const char *const tags[] = {"error", "warn", "info", "debug"};
  char buf[1024];
  int n = snprintf(buf, sizeof buf, "[revati-shim %d %s] ", (int)getpid(), tags[level & 3]);
  va_list ap;
  va_start(ap, fmt);
  n += vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  ssize_t w = write(rv_log_fd, buf, (size_t)n);
  (void)w;
}

/* ----------------------------------------------------------------------- init */

static pthread_once_t rv_once = PTHREAD_ONCE_INIT;
static volatile int rv_init_done;
static const char *rv_stats_path;

static void rv_init(void) {
  /* NOTE: rv_init_done is set before the work below: calls made from inside init (a log
   * write, a getenv in a constructor) must not recurse into pthread_once. */
  rv_init_done = 1;
  const char *lvl = getenv("REVATI_LOG_LEVEL");
  if (lvl) rv_log_level = atoi(lvl);
  const char *logf = getenv("REVATI_LOG_FILE");
  if (logf && *logf) {
    FILE *f = fopen(logf, "a");
    if (f) rv_log_fd = fileno(f);
  }
  for (size_t i = 0; i < RV_NUM_ENTRIES; i++) rv_sorted[i] = (uint16_t)i;
  qsort(rv_sorted, RV_NUM_ENTRIES, sizeof rv_sorted[0], cmp_entry);
  rv_devices_init();
  rv_memory_init();
  rv_duration_init(getenv("REVATI_PREDICTOR"));
  rv_timeline_init();
  rv_stats_path = getenv("REVATI_STATS_FILE");
  const char *trace = getenv("REVATI_TRACE");
  if (trace && *trace) rv_trace_init(trace);
  rv_timewarp_init();
  RV_LOG(RV_LOG_INFO, "shim loaded: gpu=%s devices=%d visible=%d duration=%s", rv_gpu->key,
         rv_num_physical, rv_num_visible, rv_duration->name);
}

void rv_ensure_init(void) {
  if (RV_LIKELY(rv_init_done)) return;
  pthread_once(&rv_once, rv_init);
}

__attribute__((constructor)) static void rv_ctor(void) { rv_ensure_init(); }


/* Writes REVATI_STATS_FILE.<pid>.json for processes that issued GPU work. Called at exit and
 * periodically (see rv_periodic_flush): a process killed by a signal still leaves its figures. */
uint64_t rv_steps_seen_total(void); /* predictor_client.c */

void rv_write_stats(void) {
  const char *stats = rv_stats_path;
  uint64_t total = 0;
  for (int i = 0; i < RV_OP_KINDS; i++) total += rv_global_stats.ops[i];
  if (stats && *stats && total) {
    char path[512];
    snprintf(path, sizeof path, "%s.%d.json", stats, (int)getpid());
    FILE *f = fopen(path, "w");
    if (f) {
      static const char *const kinds[] = {"kernel", "gemm", "memcpy", "memset", "collective"};
      fprintf(f, "{\"pid\": %d, \"gpu\": \"%s\", \"ops\": {", (int)getpid(), rv_gpu->key);
      for (int i = 0; i < RV_OP_KINDS; i++)
        fprintf(f, "%s\"%s\": %llu", i ? ", " : "", kinds[i], (unsigned long long)rv_global_stats.ops[i]);
      fprintf(f, "}, \"busy_ns\": {");
      for (int i = 0; i < RV_OP_KINDS; i++)
        fprintf(f, "%s\"%s\": %llu", i ? ", " : "", kinds[i], (unsigned long long)rv_global_stats.busy_ns[i]);
      fprintf(f, "}, \"family_ns\": {");
      for (int i = 0; i < RV_FAM_COUNT; i++)
        fprintf(f, "%s\"%s\": %llu", i ? ", " : "", rv_family_names[i],
                (unsigned long long)rv_global_stats.family_ns[i]);
      uint64_t ph, pm, pu, pe, mns, uns;
      rv_sidecar_stats(&ph, &pm, &pu, &pe, &mns, &uns);
      fprintf(f, "}, \"duration_source\": \"%s\", \"predictor\": {\"hits\": %llu, \"misses\": %llu, "
                 "\"unmapped_ops\": %llu, \"errors\": %llu, \"mapped_ns\": %llu, \"unmapped_ns\": %llu}",
              rv_duration->name, (unsigned long long)ph, (unsigned long long)pm, (unsigned long long)pu,
              (unsigned long long)pe, (unsigned long long)mns, (unsigned long long)uns);
      fprintf(f, ", \"graph_launches\": %llu, \"graph_nodes_replayed\": %llu, \"stub_hits\": %llu, "
                 "\"copies_real_bytes\": %llu, \"copies_dropped_bytes\": %llu, \"peak_device_bytes\": %llu, "
                 "\"host_rss_bytes\": %llu, \"jumps\": %llu, \"steps\": %llu}\n",
              (unsigned long long)rv_global_stats.graph_launches,
              (unsigned long long)rv_global_stats.graph_nodes_replayed,
              (unsigned long long)rv_stub_hits_total(),
              (unsigned long long)rv_global_stats.copies_real_bytes,
              (unsigned long long)rv_global_stats.copies_dropped_bytes,
              (unsigned long long)(rv_num_visible ? rv_devices[0].peak_used : 0),
              (unsigned long long)rv_host_rss_bytes(), (unsigned long long)rv_global_stats.jumps,
              (unsigned long long)rv_steps_seen_total());
      fclose(f);
    }
  }
}

/* Writes the stats and flushes the trace now. The vLLM plugin calls it at process exit, since
 * multiprocessing children end in _exit() and never reach the destructor below. */
RV_EXPORT void revati_flush(void) {
  if (rv_trace_on) rv_trace_flush();
  rv_write_stats();
}

__attribute__((destructor)) static void rv_dtor(void) { revati_flush(); }
