/* The Chrome/Perfetto trace (REVATI_TRACE): one JSON line per op, written to
 * <REVATI_TRACE>.parts/<pid>.jsonl, a track per stream. An op whose start follows a collective
 * not resolved yet is written once the Timekeeper knows that end (deferred records, below).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.h"
#include "timeline.h"
#include "timewarp.h"

int rv_trace_on;
static FILE *rv_trace_file;
static uint64_t rv_trace_seen[256]; /* stream ids already named in the trace */
static int rv_trace_nseen;

void rv_trace_init(const char *path) {
  char dir[4096], file[4200];
  snprintf(dir, sizeof dir, "%s.parts", path);
  if (mkdir(dir, 0755) && errno != EEXIST) {
    rv_log(RV_LOG_ERROR, "REVATI_TRACE: cannot create %s", dir);
    return;
  }
  snprintf(file, sizeof file, "%s/%d.jsonl", dir, (int)getpid());
  rv_trace_file = fopen(file, "w");
  if (!rv_trace_file) return;
  setvbuf(rv_trace_file, NULL, _IOFBF, 1 << 20);
  char comm[256] = "?";
  FILE *c = fopen("/proc/self/cmdline", "r");
  if (c) {
    size_t n = fread(comm, 1, sizeof comm - 1, c);
    comm[n] = 0;
    for (size_t i = 0; i + 1 < n; i++) if (!comm[i]) comm[i] = ' ';
    for (char *p = comm; *p; p++) if (*p == '"' || *p == '\\' || (unsigned char)*p < 32) *p = ' ';
    fclose(c);
  }
  fprintf(rv_trace_file,
          "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":\"%.200s (pid %d)\"}}\n",
          (int)getpid(), comm, (int)getpid());
  rv_trace_on = 1;
}

static void json_escape(FILE *f, const char *s, size_t max) {
  for (size_t i = 0; s[i] && i < max; i++) {
    char ch = s[i];
    if (ch == '"' || ch == '\\') fputc('\\', f);
    if ((unsigned char)ch < 32) ch = ' ';
    fputc(ch, f);
  }
}

/* ------------------------------------------------------------------- deferred trace
 * Ops placed after a pending collective have no absolute start yet: their trace records wait
 * here until the ends they depend on are resolved (at the stream's next sync, at the latest at
 * exit). */

typedef struct {
  uint64_t sid;
  int dev;
  uint8_t in_graph, coll;
  rv_op op;
  rv_tpos start;
  uint64_t dur;
  rv_ckey key; /* a resolved collective: its end */
} rv_dtrace;

static rv_dtrace *rv_dtr;
static size_t rv_ndtr, rv_capdtr;

static void trace_op_at(uint64_t sid, int dev, const rv_op *op, uint64_t start, uint64_t dur, int in_graph,
                        const char *extra);

void rv_trace_defer_locked(const struct CUstream_st *s, const rv_op *op, const rv_tpos *start, uint64_t dur,
                               int in_graph, const rv_ckey *key) {
  if (rv_ndtr == rv_capdtr) {
    rv_capdtr = rv_capdtr ? 2 * rv_capdtr : 1024;
    rv_dtr = realloc(rv_dtr, rv_capdtr * sizeof *rv_dtr);
  }
  rv_dtrace *d = &rv_dtr[rv_ndtr++];
  d->sid = s->id;
  d->dev = s->device;
  d->in_graph = (uint8_t)in_graph;
  d->coll = key != NULL;
  d->op = *op;
  d->start = *start;
  d->dur = dur;
  if (key) d->key = *key;
}

static void trace_coll_locked(uint64_t sid, int dev, const rv_op *op, uint64_t arrival, uint64_t end,
                              const rv_ckey *key, int in_graph, int unresolved) {
  char extra[160];
  snprintf(extra, sizeof extra, "\"chan\":%llu,\"seq\":%llu,\"arrival_ns\":%llu,\"end_ns\":%llu%s",
           (unsigned long long)key->chan, (unsigned long long)key->seq, (unsigned long long)arrival,
           (unsigned long long)end, unresolved ? ",\"unresolved\":1" : "");
  trace_op_at(sid, dev, op, arrival, end > arrival ? end - arrival : 0, in_graph, extra);
}

/* Writes the deferred records whose times are known now (all of them when final). */
static void trace_flush_deferred_locked(int final) {
  size_t j = 0;
  for (size_t i = 0; i < rv_ndtr; i++) {
    rv_dtrace *d = &rv_dtr[i];
    rv_tpos_fold(&d->start);
    uint64_t end = 0;
    int have_end = !d->coll || rv_rcache_get(&d->key, &end);
    if ((d->start.n || !have_end) && !final) {
      rv_dtr[j++] = *d;
      continue;
    }
    int unresolved = d->start.n || !have_end;
    if (d->coll) {
      if (!have_end) end = d->start.b + d->dur;
      trace_coll_locked(d->sid, d->dev, &d->op, d->start.b, end, &d->key, d->in_graph, unresolved);
    } else {
      trace_op_at(d->sid, d->dev, &d->op, d->start.b, d->dur, d->in_graph, unresolved ? "\"unresolved\":1" : NULL);
    }
  }
  rv_ndtr = j;
}

/* Tracing: after a resolve, the ends the deferred records still lack (a sync resolves a chain's
 * last collective; the records of the ones before it need theirs too). Without rv_lock. */
void rv_trace_catch_up(void) {
  if (!rv_trace_on) return;
  for (int round = 0; round < 256; round++) {
    rv_ckey keys[64];
    int64_t ends[64];
    int n = 0;
    pthread_mutex_lock(&rv_lock);
    trace_flush_deferred_locked(0);
    for (size_t i = 0; i < rv_ndtr && n < 64; i++) {
      rv_dtrace *d = &rv_dtr[i];
      uint64_t e;
      for (uint32_t r = 0; r <= d->start.n && n < 64; r++) {
        const rv_ckey *k = r < d->start.n ? &d->start.ref[r].key : d->coll ? &d->key : NULL;
        if (!k || rv_rcache_get(k, &e)) continue;
        int dup = 0;
        for (int j = 0; j < n && !dup; j++) dup = rv_ckey_eq(&keys[j], k);
        if (!dup) keys[n++] = *k;
      }
    }
    pthread_mutex_unlock(&rv_lock);
    if (!n) return;
    int r = rv_tw_resolve(keys, n, 0, ends);
    if (r < 0) return;
    pthread_mutex_lock(&rv_lock);
    for (int i = 0; i < n; i++)
      if (ends[i] >= 0) rv_rcache_put(&keys[i], (uint64_t)ends[i]);
    pthread_mutex_unlock(&rv_lock);
    if (r == n) return; /* no progress: the rest are not resolved yet */
  }
}

/* Whether deferred records wait for ends (under rv_lock). */
int rv_trace_deferred_locked(void) { return rv_ndtr != 0; }

void rv_trace_op(const struct CUstream_st *s, const rv_op *op, uint64_t start, uint64_t dur, int in_graph) {
  trace_op_at(s->id, s->device, op, start, dur, in_graph, NULL);
}

/* extra: more "key":value pairs for args, or NULL. */
static void trace_op_at(uint64_t sid, int dev, const rv_op *op, uint64_t start, uint64_t dur, int in_graph,
                        const char *extra) {
  if (!rv_trace_file) return;
  FILE *f = rv_trace_file;
  int pid = (int)getpid();
  int seen = 0;
  for (int i = 0; i < rv_trace_nseen; i++) if (rv_trace_seen[i] == sid) { seen = 1; break; }
  if (!seen && rv_trace_nseen < 256) {
    rv_trace_seen[rv_trace_nseen++] = sid;
    fprintf(f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%llu,\"args\":{\"name\":\"GPU %d stream %llu\"}}\n",
            pid, (unsigned long long)sid, dev, (unsigned long long)sid);
  }
  char more[200] = "";
  if (extra) snprintf(more, sizeof more, ",%s", extra);
  static const char *const kinds[] = {"kernel", "gemm", "memcpy", "memset", "collective"};
  char args[512];
  rv_op_describe(op, args, sizeof args);
  fprintf(f, "{\"ph\":\"X\",\"pid\":%d,\"tid\":%llu,\"ts\":%.3f,\"dur\":%.3f,\"cat\":\"%s\",\"name\":\"",
          pid, (unsigned long long)sid, start / 1000.0, dur / 1000.0,
          op->kind == RV_OP_KERNEL ? rv_family_names[op->u.kernel.k->family] : kinds[op->kind]);
  if (op->kind == RV_OP_KERNEL) {
    rv_kernel *k = (rv_kernel *)op->u.kernel.k;
    const char *d = rv_kernel_demangled(k);
    size_t cut = strcspn(d, "(<");
    json_escape(f, d, cut > 120 ? 120 : cut);
    fprintf(f, "\",\"args\":{%s,\"graph\":%d%s,\"mangled\":\"", args, in_graph, more);
    json_escape(f, k->mangled, 2000);
    fprintf(f, "\",\"demangled\":\"");
    json_escape(f, d, 2000);
    fputs("\"}}\n", f);
  } else if (op->kind == RV_OP_COLLECTIVE) {
    fprintf(f, "%s\",\"args\":{%s,\"graph\":%d%s}}\n", rv_coll_names[op->u.coll.coll], args, in_graph, more);
  } else {
    fprintf(f, "%s\",\"args\":{%s,\"graph\":%d%s}}\n", kinds[op->kind], args, in_graph, more);
  }
}

void rv_trace_flush(void) {
  pthread_mutex_lock(&rv_lock);
  if (rv_ndtr) trace_flush_deferred_locked(0);
  if (rv_trace_file) fflush(rv_trace_file);
  pthread_mutex_unlock(&rv_lock);
}

/* At exit: the deferred records, with whatever the Timekeeper can still tell (an end it does
 * not know is written as the lower bound, marked "unresolved"). */
__attribute__((destructor)) static void rv_trace_final(void) {
  if (!rv_trace_on || !rv_ndtr) return;
  rv_trace_catch_up();
  pthread_mutex_lock(&rv_lock);
  trace_flush_deferred_locked(1);
  if (rv_trace_file) fflush(rv_trace_file);
  pthread_mutex_unlock(&rv_lock);
}

