/* The shim's figures: REVATI_STATS_FILE.<pid>.json with the op counts, busy time, predictor
 * counters and memory of the process, written at exit and at most once a second meanwhile,
 * together with a flush of the trace. */
#define _GNU_SOURCE
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

static const char *rv_stats_path;

/* NOTE: a copy, not getenv's pointer: that points into the process's initial environment
 * block, which setproctitle overwrites when it retitles a process (SGLang's scheduler and
 * detokenizer: "sglang::scheduler"), and the stats then went nowhere. */
static char rv_stats_buf[448];
void rv_stats_init(const char *path) {
  if (!path || !*path) return;
  snprintf(rv_stats_buf, sizeof rv_stats_buf, "%s", path);
  rv_stats_path = rv_stats_buf;
}

/* Writes REVATI_STATS_FILE.<pid>.json for processes that issued GPU work. Called at exit and
 * periodically (see rv_periodic_flush): a process killed by a signal still leaves its figures. */
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
      for (int u = 0; u < 2; u++) {
        const uint64_t *ns = rv_sidecar_step_family_ns(u);
        fprintf(f, u ? "}, \"step_unmapped_family_ns\": {" : "}, \"step_family_ns\": {");
        for (int i = 0; i < RV_FAM_COUNT; i++)
          fprintf(f, "%s\"%s\": %llu", i ? ", " : "", rv_family_names[i], (unsigned long long)ns[i]);
      }
      uint64_t ph, pm, pu, pe, mns, uns;
      rv_sidecar_stats(&ph, &pm, &pu, &pe, &mns, &uns);
      fprintf(f, "}, \"duration_source\": \"%s\", \"predictor\": {\"hits\": %llu, \"misses\": %llu, "
                 "\"unmapped_ops\": %llu, \"errors\": %llu, \"mapped_ns\": %llu, \"unmapped_ns\": %llu}",
              rv_duration->name, (unsigned long long)ph, (unsigned long long)pm, (unsigned long long)pu,
              (unsigned long long)pe, (unsigned long long)mns, (unsigned long long)uns);
      uint64_t pfs, pfa, pfu, pfw;
      rv_sidecar_prefetch_stats(&pfs, &pfa, &pfu, &pfw);
      fprintf(f, ", \"prefetch\": {\"sent\": %llu, \"ahead\": %llu, \"used\": %llu, \"waited\": %llu}",
              (unsigned long long)pfs, (unsigned long long)pfa, (unsigned long long)pfu, (unsigned long long)pfw);
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

void rv_flush(void) {
  if (rv_trace_on) rv_trace_flush();
  rv_write_stats();
}

/* NOTE: clock_gettime here is the interposed one (libc.c): with the time warp on, "once a
 * second" is once a virtual second. */
static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void rv_periodic_flush(void) {
  static _Atomic uint64_t last;
  uint64_t now = now_ns(), prev = last;
  if (now - prev < 1000000000ULL) return;
  if (!__atomic_compare_exchange_n(&last, &prev, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return;
  rv_flush();
}

/* multiprocessing children end in _exit() and never get here: the vLLM plugin calls
 * revati_flush (api.c) from their finalizers. */
__attribute__((destructor)) static void rv_dtor(void) { rv_flush(); }
