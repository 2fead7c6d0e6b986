/* The GPU timelines of this process: its clock, streams, events and stream captures.
 *
 * A launch at host time V onto stream S starts at max(V, S.busy_until, event deps) and ends
 * after its predicted duration. A stream in capture records its work into the capture graph
 * instead (graphs.c replays it). Collectives (collectives.c) leave a stream at a position that
 * follows their pending ends (positions.c); syncs and queries ask the Timekeeper for them.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <time.h>

#include "shim.h"
#include "timeline.h"
#include "timewarp.h"

/* ------------------------------------------------------------------------ clock */

/* The GPU clock of this process: the host's monotonic clock plus an offset that only grows.
 * A synchronization that would wait for GPU work jumps the offset instead of sleeping, so
 * predicted GPU time costs no wall time while host work is measured for real.
 * NOTE: this is the single-process form of the time warp; the coordinator (Timekeeper)
 * generalizes it to one causal clock across processes, behind these two functions. */
static _Atomic int64_t rv_offset_ns;

static uint64_t real_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t rv_now_ns(void) {
  if (rv_tw_on) { /* a GPU op: the thread is not yield-spinning any more */
    rv_tw_unspin();
    return (uint64_t)rv_tw_now();
  }
  return real_now_ns() + (uint64_t)rv_offset_ns;
}

void rv_wait_until(uint64_t t) {
  if (rv_tw_on) { /* REVATI_TIMEWARP=1: the Timekeeper jumps the shared clock (timewarp.c) */
    rv_an_gpu(rv_now_ns(), t); /* the resolved end: the GPU is busy until t (step anatomy) */
    while (rv_tw_poll_until(NULL, 0, (int64_t)t, NULL, RV_WAIT_GPU) < 0) continue;
    return;
  }
  for (;;) {
    int64_t off = rv_offset_ns;
    int64_t need = (int64_t)t - (int64_t)real_now_ns();
    if (need <= off) return;
    if (__atomic_compare_exchange_n(&rv_offset_ns, &off, need, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
      rv_global_stats.jumps++;
      return;
    }
  }
}

/* Asks the Timekeeper for the ends of p's refs and folds them (wait: until they are all known).
 * Called without rv_lock. Returns 0 when p is absolute now. Without a Timekeeper, the refs are
 * dropped and b, a lower bound, stands for p. */
static int tpos_resolve(rv_tpos *p, int wait) {
  pthread_mutex_lock(&rv_lock);
  rv_tpos_fold(p);
  pthread_mutex_unlock(&rv_lock);
  if (!p->n) return 0;
  rv_ckey keys[RV_TREF_MAX];
  int64_t ends[RV_TREF_MAX];
  for (uint32_t i = 0; i < p->n; i++) keys[i] = p->ref[i].key;
  int r = rv_tw_resolve(keys, (int)p->n, wait, ends);
  pthread_mutex_lock(&rv_lock);
  if (r < 0) {
    p->n = 0;
  } else {
    for (uint32_t i = 0; i < p->n; i++)
      if (ends[i] >= 0) rv_rcache_put(&keys[i], (uint64_t)ends[i]);
    rv_tpos_fold(p);
  }
  int deferred = rv_trace_deferred_locked();
  pthread_mutex_unlock(&rv_lock);
  if (deferred && r >= 0) rv_trace_catch_up();
  return p->n ? -1 : 0;
}

/* ---------------------------------------------------------------------- streams */

static struct CUstream_st **rv_streams; /* every live stream, including the null streams */
static size_t rv_nstreams, rv_capstreams;
static uint64_t rv_next_stream_id = 16, rv_next_capture_id = 1;
static __thread struct CUstream_st *rv_per_thread[RV_MAX_DEVICES];

static void stream_list_add(struct CUstream_st *s) {
  if (rv_nstreams == rv_capstreams) {
    rv_capstreams = rv_capstreams ? 2 * rv_capstreams : 64;
    rv_streams = realloc(rv_streams, rv_capstreams * sizeof *rv_streams);
  }
  rv_streams[rv_nstreams++] = s;
}

static struct CUstream_st *stream_new_locked(int device, unsigned flags, int priority, uint64_t id) {
  struct CUstream_st *s = calloc(1, sizeof *s);
  s->id = id;
  s->device = device;
  s->flags = flags;
  s->priority = priority;
  stream_list_add(s);
  return s;
}

void rv_timeline_init(void) {
  pthread_mutex_lock(&rv_lock);
  for (int d = 0; d < rv_num_visible; d++)
    rv_devices[d].null_stream = stream_new_locked(d, 0, 0, (uint64_t)d * 1000 + 7);
  pthread_mutex_unlock(&rv_lock);
}

struct CUstream_st *rv_stream_create(int device, unsigned flags, int priority) {
  pthread_mutex_lock(&rv_lock);
  struct CUstream_st *s = stream_new_locked(device, flags, priority, rv_next_stream_id++);
  pthread_mutex_unlock(&rv_lock);
  return s;
}

void rv_stream_destroy(struct CUstream_st *s) {
  pthread_mutex_lock(&rv_lock);
  for (size_t i = 0; i < rv_nstreams; i++)
    if (rv_streams[i] == s) { rv_streams[i] = rv_streams[--rv_nstreams]; break; }
  pthread_mutex_unlock(&rv_lock);
  free(s);
}

struct CUstream_st *rv_stream_resolve(void *handle) {
  uintptr_t h = (uintptr_t)handle;
  int dev = rv_current_device();
  if (h == 0 || h == 1) return rv_devices[dev].null_stream; /* legacy default stream */
  if (h == 2) {                                              /* cudaStreamPerThread */
    if (!rv_per_thread[dev]) rv_per_thread[dev] = rv_stream_create(dev, 1, 0);
    return rv_per_thread[dev];
  }
  return (struct CUstream_st *)handle;
}

/* Implicit synchronization of the legacy default stream with blocking streams: merged into p. */
void rv_legacy_dependency_locked(const struct CUstream_st *s, rv_tpos *p) {
  struct CUstream_st *null_s = rv_devices[s->device].null_stream;
  if (s == null_s) {
    for (size_t i = 0; i < rv_nstreams; i++) {
      const struct CUstream_st *o = rv_streams[i];
      if (o != s && o->device == s->device && !(o->flags & 1)) rv_tpos_merge(p, &o->pos);
    }
  } else if (!(s->flags & 1)) {
    rv_tpos_merge(p, &null_s->pos);
  }
}

void rv_account_locked(const rv_op *op, uint64_t dur) {
  rv_global_stats.ops[op->kind]++;
  rv_global_stats.busy_ns[op->kind] += dur;
  int fam = op->kind == RV_OP_KERNEL ? op->u.kernel.k->family : RV_FAM_UNKNOWN;
  if (op->kind == RV_OP_KERNEL) {
    rv_global_stats.family_ns[fam] += dur;
    rv_global_stats.family_count[fam]++;
  }
}

/* Puts op at position p (advanced past it), on stream s's trace track. */
void rv_place_locked(const struct CUstream_st *s, rv_tpos *p, const rv_op *op, uint64_t dur, int in_graph) {
  if (rv_trace_on) {
    if (RV_LIKELY(!p->n)) rv_trace_op(s, op, p->b, dur, in_graph);
    else rv_trace_defer_locked(s, op, p, dur, in_graph, NULL);
  }
  rv_tpos_add(p, dur);
}

void rv_submit(struct CUstream_st *s, const rv_op *op) {
  if (op->kind == RV_OP_KERNEL) rv_kernel_family((rv_kernel *)op->u.kernel.k);
  pthread_mutex_lock(&rv_lock);
  if (s->capture) {
    rv_graph_append(s->capture, op);
    pthread_mutex_unlock(&rv_lock);
    return;
  }
  uint64_t dur = rv_duration->predict_ns(op, rv_devices[s->device].spec);
  uint64_t now = rv_now_ns();
  rv_legacy_dependency_locked(s, &s->pos);
  rv_tpos_at_least(&s->pos, now);
  rv_account_locked(op, dur);
  uint64_t start = s->pos.b;
  rv_place_locked(s, &s->pos, op, dur, 0);
  rv_an_gpu(start, s->pos.b);
  pthread_mutex_unlock(&rv_lock);
}

void rv_stream_sync(struct CUstream_st *s) {
  pthread_mutex_lock(&rv_lock);
  rv_tpos t = s->pos;
  rv_legacy_dependency_locked(s, &t);
  pthread_mutex_unlock(&rv_lock);
  if (t.n) {
    tpos_resolve(&t, 1);
    pthread_mutex_lock(&rv_lock);
    rv_tpos_fold(&s->pos);
    pthread_mutex_unlock(&rv_lock);
  }
  rv_wait_until(t.b);
}

void rv_device_sync(int dev) {
  uint64_t t = 0;
  pthread_mutex_lock(&rv_lock);
  size_t n = 0;
  rv_tpos *pend = NULL;
  for (size_t i = 0; i < rv_nstreams; i++) {
    if (rv_streams[i]->device != dev) continue;
    const rv_tpos *p = &rv_streams[i]->pos;
    if (p->b > t) t = p->b;
    if (p->n) {
      pend = realloc(pend, (n + 1) * sizeof *pend);
      pend[n++] = *p;
    }
  }
  pthread_mutex_unlock(&rv_lock);
  for (size_t i = 0; i < n; i++) { /* one at a time: each answer is cached for the next */
    tpos_resolve(&pend[i], 1);
    if (pend[i].b > t) t = pend[i].b;
  }
  free(pend);
  if (n) {
    pthread_mutex_lock(&rv_lock);
    for (size_t i = 0; i < rv_nstreams; i++) rv_tpos_fold(&rv_streams[i]->pos);
    pthread_mutex_unlock(&rv_lock);
  }
  rv_wait_until(t);
}

int rv_stream_done(struct CUstream_st *s) {
  pthread_mutex_lock(&rv_lock);
  rv_tpos t = s->pos;
  rv_legacy_dependency_locked(s, &t);
  rv_tpos_fold(&t);
  pthread_mutex_unlock(&rv_lock);
  uint64_t now = rv_now_ns();
  if (t.b > now) return 0; /* b is a lower bound */
  /* A pending collective whose ranks have not all arrived has not ended on a real GPU either:
   * they arrive at or after now. */
  if (t.n && tpos_resolve(&t, 0) < 0) return 0;
  return t.b <= rv_now_ns();
}

void rv_event_record(struct CUevent_st *e, struct CUstream_st *s) {
  pthread_mutex_lock(&rv_lock);
  e->device = s->device;
  if (s->capture) {
    e->capture = s->capture;
    e->capture_id = s->capture_id;
  } else {
    e->capture = NULL;
    e->capture_id = 0;
    uint64_t now = rv_now_ns();
    e->t = s->pos;
    rv_legacy_dependency_locked(s, &e->t);
    rv_tpos_at_least(&e->t, now);
  }
  e->recorded = 1;
  pthread_mutex_unlock(&rv_lock);
}

int rv_event_done(struct CUevent_st *e) {
  if (!e->recorded) return 1;
  pthread_mutex_lock(&rv_lock);
  rv_tpos t = e->t;
  rv_tpos_fold(&t);
  pthread_mutex_unlock(&rv_lock);
  uint64_t now = rv_now_ns();
  if (t.b > now) return 0;
  if (t.n && tpos_resolve(&t, 0) < 0) return 0;
  return t.b <= rv_now_ns();
}

/* The absolute time of a recorded event (waits for the ranks of pending collectives). */
static uint64_t event_time(struct CUevent_st *e) {
  pthread_mutex_lock(&rv_lock);
  rv_tpos t = e->t;
  pthread_mutex_unlock(&rv_lock);
  if (t.n) tpos_resolve(&t, 1);
  return t.b;
}

void rv_event_sync(struct CUevent_st *e) {
  if (e->recorded && !e->capture) rv_wait_until(event_time(e));
}

double rv_event_elapsed_ms(struct CUevent_st *a, struct CUevent_st *b) {
  return ((double)event_time(b) - (double)event_time(a)) / 1e6;
}

static int capture_active_locked(uint64_t capture_id) {
  for (size_t i = 0; i < rv_nstreams; i++)
    if (rv_streams[i]->capture && rv_streams[i]->capture_id == capture_id) return 1;
  return 0;
}

void rv_stream_wait_event(struct CUstream_st *s, struct CUevent_st *e) {
  pthread_mutex_lock(&rv_lock);
  if (e->capture && capture_active_locked(e->capture_id)) {
    if (!s->capture) { /* fork: s joins the capture the event was recorded in */
      s->capture = e->capture;
      s->capture_id = e->capture_id;
      s->capture_origin = 0;
    }
  } else if (e->recorded) {
    rv_tpos_merge(&s->pos, &e->t);
  }
  pthread_mutex_unlock(&rv_lock);
}

/* --------------------------------------------------------------------- captures */

int rv_begin_capture(struct CUstream_st *s, int mode) {
  pthread_mutex_lock(&rv_lock);
  if (s->capture) { pthread_mutex_unlock(&rv_lock); return -1; }
  s->capture = rv_graph_new();
  s->capture_id = rv_next_capture_id++;
  s->capture_mode = mode;
  s->capture_origin = 1;
  pthread_mutex_unlock(&rv_lock);
  return 0;
}

rv_graph *rv_end_capture(struct CUstream_st *s) {
  pthread_mutex_lock(&rv_lock);
  rv_graph *g = s->capture;
  if (g) {
    for (size_t i = 0; i < rv_nstreams; i++)
      if (rv_streams[i]->capture == g) { rv_streams[i]->capture = NULL; rv_streams[i]->capture_id = 0; }
  }
  pthread_mutex_unlock(&rv_lock);
  return g;
}
