/* The shim's start: reads the environment once and initializes every part, in order, at
 * load (the constructor) or at the first entry point called before it. */
#define _GNU_SOURCE
#include <stdlib.h>

#include "shim.h"

void rv_devices_init(void);   /* device.c */
void rv_memory_init(void);    /* memory.c */
void rv_timeline_init(void);  /* timeline.c */
void rv_timewarp_init(void);  /* timewarp.c */

static pthread_once_t rv_once = PTHREAD_ONCE_INIT;
static volatile int rv_init_done;

static void rv_init(void) {
  /* NOTE: rv_init_done is set before the work below: calls made from inside init (a log
   * write, a getenv in a constructor) must not recurse into pthread_once. */
  rv_init_done = 1;
  rv_log_init();
  rv_entries_init();
  rv_devices_init();
  rv_memory_init();
  rv_duration_init(getenv("REVATI_PREDICTOR"));
  rv_timeline_init();
  rv_stats_init(getenv("REVATI_STATS_FILE"));
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
