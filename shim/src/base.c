/* The shim's base layer: logging, the lock and the counters that every other file shares.
 * It calls nothing else of the shim, so any file may use it (log.c would have been too
 * narrow a name for the lock and the counters; init.c reads the log settings). */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "shim.h"

int rv_log_level = RV_LOG_WARN;
pthread_mutex_t rv_lock = PTHREAD_MUTEX_INITIALIZER;
rv_stats rv_global_stats;

static int rv_log_fd = 2;

void rv_log_init(void) {
  const char *lvl = getenv("REVATI_LOG_LEVEL");
  if (lvl) rv_log_level = atoi(lvl);
  const char *logf = getenv("REVATI_LOG_FILE");
  if (logf && *logf) {
    FILE *f = fopen(logf, "a");
    if (f) rv_log_fd = fileno(f);
  }
}

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
