/* Per-stream virtual timelines, events, CUDA-graph capture and replay, the kernel registry
 * and the Chrome/Perfetto trace.
 *
 * A launch at host time V onto stream S starts at max(V, S.busy_until, event deps) and ends
 * after its predicted duration. Captured work is recorded into the graph instead; a replay
 * puts every node on the stream's timeline, as one jump of their summed durations.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"
#include "timewarp.h"

const char *const rv_family_names[RV_FAM_COUNT] = {
    "unknown", "attention", "norm", "rotary", "activation", "cache_write", "sampler",
    "triton", "elementwise", "reduce", "gemm_kernel", "copy_kernel", "moe"};
const char *const rv_dtype_names[RV_DT_COUNT] = {"unknown", "fp32", "fp16", "bf16", "fp8_e4m3",
                                                 "fp8_e5m2", "fp64", "int8", "int32", "tf32"};
const char *const rv_coll_names[RV_COLL_COUNT] = {"all_reduce", "all_gather", "reduce_scatter",
                                                  "broadcast", "reduce", "send", "recv", "all_to_all"};

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

/* -------------------------------------------------------------------- positions
 *
 * A stream's position is an rv_tpos: max(b, end(key_i) + a_i). Launching an op of duration d
 * at host time h maps it to max(b, h) + d with every a_i + d; waiting on an event is a max
 * (union of refs). So a stream goes on after a collective without knowing its end: the end is
 * asked of the Timekeeper (rv_tw_resolve) only where the host needs an absolute time (a sync,
 * a query, elapsed time, a trace record). Resolved ends are cached here (rcache). */

static inline void tpos_at_least(rv_tpos *p, uint64_t t) {
  if (t > p->b) p->b = t;
}

static inline void tpos_add(rv_tpos *p, uint64_t d) {
  p->b += d;
  for (uint32_t i = 0; i < p->n; i++) p->ref[i].a += d;
}

static inline int ckey_eq(const rv_ckey *x, const rv_ckey *y) {
  return x->comm == y->comm && x->chan == y->chan && x->seq == y->seq;
}

#define RV_RCACHE 4096 /* direct-mapped: a key pushed out is asked again */
static struct {
  rv_ckey k;
  uint64_t end;
  int valid;
} rv_rcache[RV_RCACHE];

static size_t rcache_slot(const rv_ckey *k) {
  uint64_t x = k->comm ^ (k->chan * 0x9e3779b97f4a7c15ULL) ^ (k->seq * 0xff51afd7ed558ccdULL);
  x ^= x >> 29;
  return (size_t)(x & (RV_RCACHE - 1));
}

static int rcache_get(const rv_ckey *k, uint64_t *end) {
  size_t i = rcache_slot(k);
  if (!rv_rcache[i].valid || !ckey_eq(&rv_rcache[i].k, k)) return 0;
  *end = rv_rcache[i].end;
  return 1;
}

static void rcache_put(const rv_ckey *k, uint64_t end) {
  size_t i = rcache_slot(k);
  rv_rcache[i].k = *k;
  rv_rcache[i].end = end;
  rv_rcache[i].valid = 1;
}

/* Folds the refs whose end is known into b. */
static void tpos_fold(rv_tpos *p) {
  uint32_t j = 0;
  for (uint32_t i = 0; i < p->n; i++) {
    uint64_t e;
    if (rcache_get(&p->ref[i].key, &e)) tpos_at_least(p, e + p->ref[i].a);
    else p->ref[j++] = p->ref[i];
  }
  p->n = j;
}

typedef struct {
  rv_ckey key;
  uint64_t a;
} rv_tref;

/* Appends an arrival to an ARRIVE batch (the encoding of timewarp.h). */
typedef struct {
  int64_t *v;
  size_t n, cap;
} rv_ibuf;

static void ibuf_put(rv_ibuf *b, int64_t x) {
  if (b->n == b->cap) {
    b->cap = b->cap ? 2 * b->cap : 256;
    b->v = realloc(b->v, b->cap * sizeof *b->v);
  }
  b->v[b->n++] = x;
}

static void arrival_put(rv_ibuf *b, const rv_ckey *key, int op, int nparts, int slot, uint64_t dur,
                        uint64_t base, const rv_tref *refs, uint32_t nrefs) {
  ibuf_put(b, (int64_t)key->comm);
  ibuf_put(b, (int64_t)key->chan);
  ibuf_put(b, (int64_t)key->seq);
  ibuf_put(b, op);
  ibuf_put(b, nparts);
  ibuf_put(b, slot);
  ibuf_put(b, (int64_t)dur);
  ibuf_put(b, (int64_t)base);
  ibuf_put(b, nrefs);
  for (uint32_t i = 0; i < nrefs; i++) {
    ibuf_put(b, (int64_t)refs[i].key.comm);
    ibuf_put(b, (int64_t)refs[i].key.chan);
    ibuf_put(b, (int64_t)refs[i].key.seq);
    ibuf_put(b, (int64_t)refs[i].a);
  }
}

#define RV_OP_JOIN 255 /* the "op" of a join in ARRIVE */
static uint64_t rv_join_seq;

/* Sets p's refs. More than RV_TREF_MAX become one join: a collective of one participant (this
 * process, on its private comm) and no duration, whose arrival is their max. */
static void tpos_set_refs(rv_tpos *p, const rv_tref *refs, uint32_t n) {
  if (n <= RV_TREF_MAX) {
    for (uint32_t i = 0; i < n; i++) { p->ref[i].key = refs[i].key; p->ref[i].a = refs[i].a; }
    p->n = n;
    return;
  }
  rv_ckey key = {rv_tw_private_id(), 0, rv_join_seq++};
  int64_t v[9 + 4 * 2 * RV_TREF_MAX];
  rv_ibuf b = {v, 0, sizeof v / sizeof v[0]};
  arrival_put(&b, &key, RV_OP_JOIN, 1, 0, 0, p->b, refs, n);
  p->n = 0;
  if (rv_tw_arrive(b.v, b.n) == 0) {
    p->n = 1;
    p->ref[0].key = key;
    p->ref[0].a = 0;
  } /* else no Timekeeper: b stays the lower bound it is */
}

/* p = max(p, q). */
static void tpos_merge(rv_tpos *p, const rv_tpos *q) {
  tpos_at_least(p, q->b);
  if (RV_LIKELY(!q->n)) return;
  rv_tref tmp[2 * RV_TREF_MAX];
  uint32_t n = 0;
  for (uint32_t i = 0; i < p->n; i++) { tmp[n].key = p->ref[i].key; tmp[n++].a = p->ref[i].a; }
  for (uint32_t i = 0; i < q->n; i++) {
    uint32_t k = 0;
    while (k < n && !ckey_eq(&tmp[k].key, &q->ref[i].key)) k++;
    if (k < n) { if (q->ref[i].a > tmp[k].a) tmp[k].a = q->ref[i].a; }
    else { tmp[n].key = q->ref[i].key; tmp[n++].a = q->ref[i].a; }
  }
  if (n > RV_TREF_MAX) { /* known ends first: a join costs a message */
    uint32_t j = 0;
    for (uint32_t i = 0; i < n; i++) {
      uint64_t e;
      if (rcache_get(&tmp[i].key, &e)) tpos_at_least(p, e + tmp[i].a);
      else tmp[j++] = tmp[i];
    }
    n = j;
  }
  tpos_set_refs(p, tmp, n);
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

static void trace_defer_locked(const struct CUstream_st *s, const rv_op *op, const rv_tpos *start, uint64_t dur,
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
    tpos_fold(&d->start);
    uint64_t end = 0;
    int have_end = !d->coll || rcache_get(&d->key, &end);
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
static void trace_catch_up(void) {
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
        if (!k || rcache_get(k, &e)) continue;
        int dup = 0;
        for (int j = 0; j < n && !dup; j++) dup = ckey_eq(&keys[j], k);
        if (!dup) keys[n++] = *k;
      }
    }
    pthread_mutex_unlock(&rv_lock);
    if (!n) return;
    int r = rv_tw_resolve(keys, n, 0, ends);
    if (r < 0) return;
    pthread_mutex_lock(&rv_lock);
    for (int i = 0; i < n; i++)
      if (ends[i] >= 0) rcache_put(&keys[i], (uint64_t)ends[i]);
    pthread_mutex_unlock(&rv_lock);
    if (r == n) return; /* no progress: the rest are not resolved yet */
  }
}

/* Asks the Timekeeper for the ends of p's refs and folds them (wait: until they are all known).
 * Called without rv_lock. Returns 0 when p is absolute now. Without a Timekeeper, the refs are
 * dropped and b, a lower bound, stands for p. */
static int tpos_resolve(rv_tpos *p, int wait) {
  pthread_mutex_lock(&rv_lock);
  tpos_fold(p);
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
      if (ends[i] >= 0) rcache_put(&keys[i], (uint64_t)ends[i]);
    tpos_fold(p);
  }
  int deferred = rv_ndtr != 0;
  pthread_mutex_unlock(&rv_lock);
  if (deferred && r >= 0) trace_catch_up();
  return p->n ? -1 : 0;
}

/* ---------------------------------------------------------------------- streams */

static struct CUstream_st **rv_streams; /* every live stream, including the null streams */
static size_t rv_nstreams, rv_capstreams;
static uint64_t rv_next_stream_id = 16, rv_next_capture_id = 1, rv_next_graph_id = 1;
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
static void legacy_dependency_locked(const struct CUstream_st *s, rv_tpos *p) {
  struct CUstream_st *null_s = rv_devices[s->device].null_stream;
  if (s == null_s) {
    for (size_t i = 0; i < rv_nstreams; i++) {
      const struct CUstream_st *o = rv_streams[i];
      if (o != s && o->device == s->device && !(o->flags & 1)) tpos_merge(p, &o->pos);
    }
  } else if (!(s->flags & 1)) {
    tpos_merge(p, &null_s->pos);
  }
}

static void account_locked(const rv_op *op, uint64_t dur) {
  rv_global_stats.ops[op->kind]++;
  rv_global_stats.busy_ns[op->kind] += dur;
  int fam = op->kind == RV_OP_KERNEL ? op->u.kernel.k->family : RV_FAM_UNKNOWN;
  if (op->kind == RV_OP_KERNEL) {
    rv_global_stats.family_ns[fam] += dur;
    rv_global_stats.family_count[fam]++;
  }
}

int rv_kernel_family(rv_kernel *k) {
  if (RV_UNLIKELY(k->family < 0)) {
    int fam = rv_classify_kernel(k->mangled);
    if (fam == RV_FAM_UNKNOWN && k->from_triton) fam = RV_FAM_TRITON;
    k->family = fam;
  }
  return k->family;
}

/* Puts op at position p (advanced past it), on stream s's trace track. */
static void place_locked(const struct CUstream_st *s, rv_tpos *p, const rv_op *op, uint64_t dur, int in_graph) {
  if (rv_trace_on) {
    if (RV_LIKELY(!p->n)) rv_trace_op(s, op, p->b, dur, in_graph);
    else trace_defer_locked(s, op, p, dur, in_graph, NULL);
  }
  tpos_add(p, dur);
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
  legacy_dependency_locked(s, &s->pos);
  tpos_at_least(&s->pos, now);
  account_locked(op, dur);
  uint64_t start = s->pos.b;
  place_locked(s, &s->pos, op, dur, 0);
  rv_an_gpu(start, s->pos.b);
  pthread_mutex_unlock(&rv_lock);
}

/* ------------------------------------------------------------------ collectives
 *
 * With the time warp on, a call on a communicator of several ranks is an arrival: its key
 * (rv_nccl_next_key), the stream's position when it starts (which may itself follow earlier
 * pending collectives) and its predicted duration go to the Timekeeper in one message, and the
 * thread goes on at once. The stream then ends at the collective's end, which the Timekeeper
 * computes as max(arrivals) + duration once every rank has arrived; the host learns it when
 * it needs it (tpos_resolve). Calls between ncclGroupStart and ncclGroupEnd all start at the
 * stream's position at the group's first call on it, and the stream goes on after the latest
 * of their ends. Without the time warp, a collective is an op of its predicted duration. */

#define RV_GROUP_STREAMS 16
static __thread struct {
  int active;
  uint32_t id;
  int n;
  struct {
    struct CUstream_st *s;
    rv_tpos start, end;
  } e[RV_GROUP_STREAMS];
} rv_grp;
static _Atomic uint32_t rv_next_group = 1;

void rv_coll_group_begin(void) {
  rv_grp.active = 1;
  rv_grp.id = __atomic_fetch_add(&rv_next_group, 1, __ATOMIC_RELAXED);
  rv_grp.n = 0;
}

void rv_coll_group_end(void) {
  if (!rv_grp.active) return;
  pthread_mutex_lock(&rv_lock);
  for (int i = 0; i < rv_grp.n; i++) tpos_merge(&rv_grp.e[i].s->pos, &rv_grp.e[i].end);
  pthread_mutex_unlock(&rv_lock);
  rv_grp.active = 0;
  rv_grp.n = 0;
}

/* Whether op is resolved by the Timekeeper (else it is a local op of its duration). */
static int coll_resolved(const rv_op *op) {
  return rv_tw_on && op->kind == RV_OP_COLLECTIVE && op->u.coll.comm && op->u.coll.nranks > 1;
}

/* One arrival at position *at (the call's start); returns its end's position in *end.
 * Returns 0 when the call turned out to be local (a send to an out-of-range peer). */
static int coll_arrive_locked(const rv_op *op, uint64_t dur, const rv_tpos *at, rv_ibuf *batch, rv_ckey *key,
                              rv_tpos *end) {
  int slot = 0;
  int nparts = rv_nccl_next_key(op->u.coll.comm, op, key, &slot);
  if (nparts <= 1) return 0;
  rv_tref refs[RV_TREF_MAX];
  for (uint32_t i = 0; i < at->n; i++) { refs[i].key = at->ref[i].key; refs[i].a = at->ref[i].a; }
  arrival_put(batch, key, op->u.coll.coll, nparts, slot, dur, at->b, refs, at->n);
  /* The end is at least this rank's own arrival plus the duration, and follows the key. */
  end->b = at->b + dur;
  end->n = 1;
  end->ref[0].key = *key;
  end->ref[0].a = 0;
  return 1;
}

void rv_coll_submit(struct CUstream_st *s, const rv_op *in) {
  rv_op op = *in;
  op.u.coll.group = rv_grp.active ? rv_grp.id : 0;
  pthread_mutex_lock(&rv_lock);
  if (s->capture) {
    rv_graph_append(s->capture, &op);
    pthread_mutex_unlock(&rv_lock);
    return;
  }
  uint64_t dur = rv_duration->predict_ns(&op, rv_devices[s->device].spec);
  uint64_t now = rv_now_ns();
  account_locked(&op, dur);
  if (!coll_resolved(&op)) {
    legacy_dependency_locked(s, &s->pos);
    tpos_at_least(&s->pos, now);
    rv_an_gpu(s->pos.b, s->pos.b + dur);
    place_locked(s, &s->pos, &op, dur, 0);
    pthread_mutex_unlock(&rv_lock);
    return;
  }
  rv_tpos at = s->pos, *gend = NULL;
  legacy_dependency_locked(s, &at);
  tpos_at_least(&at, now);
  if (rv_grp.active) {
    int i = 0;
    while (i < rv_grp.n && rv_grp.e[i].s != s) i++;
    if (i < rv_grp.n) {
      at = rv_grp.e[i].start;
      gend = &rv_grp.e[i].end;
    } else if (i < RV_GROUP_STREAMS) {
      rv_grp.e[i].s = s;
      rv_grp.e[i].start = at;
      rv_grp.e[i].end.b = at.b; /* every call's end follows its start: the start's refs are implied */
      rv_grp.e[i].end.n = 0;
      gend = &rv_grp.e[i].end;
      rv_grp.n++;
    }
  }
  int64_t stack[9 + 4 * RV_TREF_MAX];
  rv_ibuf batch = {stack, 0, sizeof stack / sizeof stack[0]};
  rv_ckey key;
  rv_tpos end;
  if (!coll_arrive_locked(&op, dur, &at, &batch, &key, &end) || rv_tw_arrive(batch.v, batch.n) < 0) {
    /* local after all (no Timekeeper): an op of its duration */
    s->pos = at;
    rv_an_gpu(s->pos.b, s->pos.b + dur);
    place_locked(s, &s->pos, &op, dur, 0);
    pthread_mutex_unlock(&rv_lock);
    return;
  }
  rv_an_gpu(at.b, at.b + dur); /* from this rank's arrival: the lower bound of its end */
  if (rv_trace_on) trace_defer_locked(s, &op, &at, dur, 0, &key);
  if (gend) tpos_merge(gend, &end);
  else s->pos = end;
  pthread_mutex_unlock(&rv_lock);
}

void rv_periodic_flush(void) {
  static _Atomic uint64_t last;
  uint64_t now = real_now_ns(), prev = last;
  if (now - prev < 1000000000ULL) return;
  if (!__atomic_compare_exchange_n(&last, &prev, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return;
  if (rv_trace_on) rv_trace_flush();
  rv_write_stats();
}

void rv_stream_sync(struct CUstream_st *s) {
  rv_periodic_flush();
  pthread_mutex_lock(&rv_lock);
  rv_tpos t = s->pos;
  legacy_dependency_locked(s, &t);
  pthread_mutex_unlock(&rv_lock);
  if (t.n) {
    tpos_resolve(&t, 1);
    pthread_mutex_lock(&rv_lock);
    tpos_fold(&s->pos);
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
    for (size_t i = 0; i < rv_nstreams; i++) tpos_fold(&rv_streams[i]->pos);
    pthread_mutex_unlock(&rv_lock);
  }
  rv_wait_until(t);
}

int rv_stream_done(struct CUstream_st *s) {
  pthread_mutex_lock(&rv_lock);
  rv_tpos t = s->pos;
  legacy_dependency_locked(s, &t);
  tpos_fold(&t);
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
    legacy_dependency_locked(s, &e->t);
    tpos_at_least(&e->t, now);
  }
  e->recorded = 1;
  pthread_mutex_unlock(&rv_lock);
}

int rv_event_done(struct CUevent_st *e) {
  if (!e->recorded) return 1;
  pthread_mutex_lock(&rv_lock);
  rv_tpos t = e->t;
  tpos_fold(&t);
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
    tpos_merge(&s->pos, &e->t);
  }
  pthread_mutex_unlock(&rv_lock);
}

/* ----------------------------------------------------------------------- graphs */

rv_graph *rv_graph_new(void) {
  rv_graph *g = calloc(1, sizeof(struct CUgraphExec_st));
  g->id = __atomic_fetch_add(&rv_next_graph_id, 1, __ATOMIC_RELAXED);
  return g;
}

void rv_graph_append(rv_graph *g, const rv_op *op) {
  if (g->n == g->cap) {
    g->cap = g->cap ? 2 * g->cap : 64;
    g->nodes = realloc(g->nodes, g->cap * sizeof *g->nodes);
  }
  g->nodes[g->n++] = *op;
}

void rv_graph_free(rv_graph *g) {
  if (!g) return;
  free(g->nodes);
  free(g);
}

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

rv_graph *rv_graph_instantiate(const rv_graph *g) {
  rv_graph *x = rv_graph_new();
  x->instantiated = 1;
  for (size_t i = 0; i < g->n; i++) rv_graph_append(x, &g->nodes[i]);
  return x;
}

/* A replay puts every node on the stream, in order. Captured collectives are numbered at each
 * replay, like eager ones, and all of a replay's arrivals go to the Timekeeper in one message:
 * each one's start follows the previous collective's pending end. */
void rv_graph_launch(const rv_graph *x, struct CUstream_st *s) {
  pthread_mutex_lock(&rv_lock);
  if (s->capture) { /* a graph launched inside a capture becomes part of it */
    for (size_t i = 0; i < x->n; i++) rv_graph_append(s->capture, &x->nodes[i]);
    pthread_mutex_unlock(&rv_lock);
    return;
  }
  const rv_gpu_spec *gpu = rv_devices[s->device].spec;
  uint64_t now = rv_now_ns();
  rv_tpos t = s->pos;
  legacy_dependency_locked(s, &t);
  tpos_at_least(&t, now);
  uint64_t start = t.b;
  rv_ibuf batch = {0};
  uint32_t group = 0;
  rv_tpos gstart, gend;
  for (size_t i = 0; i < x->n; i++) {
    const rv_op *op = &x->nodes[i];
    uint64_t dur = rv_duration->predict_ns(op, gpu);
    account_locked(op, dur);
    uint32_t g = op->kind == RV_OP_COLLECTIVE ? op->u.coll.group : 0;
    if (group && g != group) { /* the group ended: go on after its latest end */
      t = gend;
      group = 0;
    }
    rv_ckey key;
    rv_tpos end;
    if (coll_resolved(op)) {
      if (g && !group) {
        group = g;
        gstart = t;
        gend.b = t.b;
        gend.n = 0;
      }
      rv_tpos *at = group ? &gstart : &t;
      if (coll_arrive_locked(op, dur, at, &batch, &key, &end)) {
        if (rv_trace_on) trace_defer_locked(s, op, at, dur, 1, &key);
        if (group) tpos_merge(&gend, &end);
        else t = end;
        continue;
      }
    }
    place_locked(s, group ? &gend : &t, op, dur, 1);
  }
  if (group) t = gend;
  if (batch.n && rv_tw_arrive(batch.v, batch.n) < 0) t.n = 0; /* no Timekeeper: b is a lower bound */
  free(batch.v);
  s->pos = t;
  rv_an_gpu(start, t.b); /* one run for the replay: its nodes are back to back */
  rv_global_stats.graph_launches++;
  rv_global_stats.graph_nodes_replayed += x->n;
  pthread_mutex_unlock(&rv_lock);
  /* Host-visible effects of captured copies and memsets happen again on every replay. */
  for (size_t i = 0; i < x->n; i++) {
    const rv_op *op = &x->nodes[i];
    if (op->kind == RV_OP_MEMCPY && op->u.copy.dst) rv_copy_effect(op->u.copy.dst, op->u.copy.src, op->u.copy.bytes);
    else if (op->kind == RV_OP_MEMSET && op->u.memset.dst)
      rv_memset_effect(op->u.memset.dst, op->u.memset.value, op->u.memset.bytes);
  }
}

/* -------------------------------------------------------------- kernel registry */

typedef struct {
  const void *key;
  rv_kernel *k;
} rv_kslot;
static rv_kslot *rv_ktab;
static size_t rv_kcap, rv_kcount;
static pthread_mutex_t rv_klock = PTHREAD_MUTEX_INITIALIZER;

static size_t khash(const void *p, size_t cap) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
  return (size_t)x & (cap - 1);
}

static void ktab_put(const void *key, rv_kernel *k) {
  if ((rv_kcount + 1) * 2 > rv_kcap) {
    size_t ncap = rv_kcap ? rv_kcap * 2 : 4096;
    rv_kslot *n = calloc(ncap, sizeof *n);
    for (size_t i = 0; i < rv_kcap; i++)
      if (rv_ktab[i].key) {
        size_t j = khash(rv_ktab[i].key, ncap);
        while (n[j].key) j = (j + 1) & (ncap - 1);
        n[j] = rv_ktab[i];
      }
    free(rv_ktab);
    rv_ktab = n;
    rv_kcap = ncap;
  }
  size_t j = khash(key, rv_kcap);
  while (rv_ktab[j].key && rv_ktab[j].key != key) j = (j + 1) & (rv_kcap - 1);
  if (!rv_ktab[j].key) rv_kcount++;
  rv_ktab[j].key = key;
  rv_ktab[j].k = k;
}

rv_kernel *rv_kernel_new(const char *mangled, int from_triton) {
  rv_kernel *k = calloc(1, sizeof(struct CUfunc_st));
  k->mangled = strdup(mangled ? mangled : "?");
  k->from_triton = from_triton;
  k->family = -1; /* classified on first launch: most registered kernels never run */
  return k;
}

rv_kernel *rv_kernel_register(const void *host_fun, const char *mangled) {
  rv_kernel *k = rv_kernel_new(mangled, 0);
  k->host_fun = host_fun;
  pthread_mutex_lock(&rv_klock);
  ktab_put(host_fun, k);
  pthread_mutex_unlock(&rv_klock);
  return k;
}

rv_kernel *rv_kernel_by_host_fun(const void *host_fun) {
  rv_kernel *k = NULL;
  pthread_mutex_lock(&rv_klock);
  if (rv_kcap) {
    size_t j = khash(host_fun, rv_kcap);
    while (rv_ktab[j].key) {
      if (rv_ktab[j].key == host_fun) { k = rv_ktab[j].k; break; }
      j = (j + 1) & (rv_kcap - 1);
    }
  }
  pthread_mutex_unlock(&rv_klock);
  return k;
}

const char *rv_kernel_demangled(rv_kernel *k) {
  if (k->demangled) return k->demangled;
  typedef char *(*demangle_fn)(const char *, char *, size_t *, int *);
  static demangle_fn demangle;
  if (!demangle) demangle = (demangle_fn)dlsym(RTLD_DEFAULT, "__cxa_demangle");
  int status = -1;
  char *d = demangle ? demangle(k->mangled, NULL, NULL, &status) : NULL;
  k->demangled = (status == 0 && d) ? d : strdup(k->mangled);
  return k->demangled;
}

/* Kernel families from the (mangled) name. Order matters: the first match wins. */
int rv_classify_kernel(const char *n) {
  static const struct { const char *pat; int fam; } rules[] = {
      {"reshape_and_cache", RV_FAM_CACHE_WRITE}, {"concat_and_cache", RV_FAM_CACHE_WRITE},
      {"copy_blocks", RV_FAM_CACHE_WRITE},       {"moe", RV_FAM_MOE},
      {"expert", RV_FAM_MOE},                    {"topk_softmax", RV_FAM_MOE},
      /* FlashAttention's helpers around its main kernel: the split-KV scheduler's block count
       * (FA3 prepare_varlen_num_blocks) and the combine of split-KV partial outputs (FA3
       * FlashAttnFwdCombine, FA2 flash_fwd_splitkv_combine_kernel). They are not the attention
       * op: described by their launch geometry, or each would be charged the whole op (the
       * main kernel carries it, as in the measured tables, which time the whole call). */
      {"prepare_varlen", RV_FAM_REDUCE},         {"Combine", RV_FAM_REDUCE},
      {"combine", RV_FAM_REDUCE},
      {"flash", RV_FAM_ATTENTION},               {"Flash", RV_FAM_ATTENTION},
      {"fmha", RV_FAM_ATTENTION},                {"attention", RV_FAM_ATTENTION},
      {"attn", RV_FAM_ATTENTION},                {"Attn", RV_FAM_ATTENTION},
      {"rms_norm", RV_FAM_NORM},                 {"layer_norm", RV_FAM_NORM},
      {"rmsnorm", RV_FAM_NORM},                  {"layernorm", RV_FAM_NORM},
      {"RMSNorm", RV_FAM_NORM},                  {"LayerNorm", RV_FAM_NORM},
      {"rotary", RV_FAM_ROTARY},                 {"rope", RV_FAM_ROTARY},
      {"act_and_mul", RV_FAM_ACTIVATION},        {"silu", RV_FAM_ACTIVATION},
      {"gelu", RV_FAM_ACTIVATION},               {"activation", RV_FAM_ACTIVATION},
      {"sampl", RV_FAM_SAMPLER},                 {"gumbel", RV_FAM_SAMPLER},
      {"top_k", RV_FAM_SAMPLER},                 {"topk", RV_FAM_SAMPLER},
      {"top_p", RV_FAM_SAMPLER},                 {"argmax", RV_FAM_SAMPLER},
      {"multinomial", RV_FAM_SAMPLER},           {"gemm", RV_FAM_GEMM_KERNEL},
      {"Gemm", RV_FAM_GEMM_KERNEL},              {"cutlass", RV_FAM_GEMM_KERNEL},
      {"xmma", RV_FAM_GEMM_KERNEL},              {"matmul", RV_FAM_GEMM_KERNEL},
      {"reduce", RV_FAM_REDUCE},                 {"Reduce", RV_FAM_REDUCE},
      {"softmax", RV_FAM_REDUCE},                {"copy", RV_FAM_COPY_KERNEL},
      {"Copy", RV_FAM_COPY_KERNEL},              {"CatArray", RV_FAM_COPY_KERNEL},
      {"elementwise", RV_FAM_ELEMENTWISE},       {"fill", RV_FAM_ELEMENTWISE},
      {"index", RV_FAM_ELEMENTWISE},             {"Index", RV_FAM_ELEMENTWISE},
      {"scatter", RV_FAM_ELEMENTWISE},           {"gather", RV_FAM_ELEMENTWISE},
  };
  for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
    if (strstr(n, rules[i].pat)) return rules[i].fam;
  return RV_FAM_UNKNOWN;
}

/* ------------------------------------------------------------------------ trace */

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

void rv_op_describe(const rv_op *op, char *buf, size_t len) {
  switch (op->kind) {
    case RV_OP_GEMM:
      snprintf(buf, len, "\"m\":%lld,\"n\":%lld,\"k\":%lld,\"batch\":%lld,\"dtype\":\"%s\",\"out_dtype\":\"%s\",\"trans_a\":%d,\"trans_b\":%d",
               (long long)op->u.gemm.m, (long long)op->u.gemm.n, (long long)op->u.gemm.k,
               (long long)op->u.gemm.batch, rv_dtype_names[op->u.gemm.dtype_a],
               rv_dtype_names[op->u.gemm.dtype_c], op->u.gemm.trans_a, op->u.gemm.trans_b);
      break;
    case RV_OP_MEMCPY: {
      static const char *const dirs[] = {"h2h", "h2d", "d2h", "d2d"};
      snprintf(buf, len, "\"bytes\":%llu,\"direction\":\"%s\"", (unsigned long long)op->u.copy.bytes,
               dirs[op->u.copy.dir & 3]);
      break;
    }
    case RV_OP_MEMSET:
      snprintf(buf, len, "\"bytes\":%llu", (unsigned long long)op->u.memset.bytes);
      break;
    case RV_OP_COLLECTIVE:
      snprintf(buf, len, "\"op\":\"%s\",\"bytes\":%llu,\"ranks\":%d,\"rank\":%d,\"comm\":\"%016llx\",\"peer\":%d",
               rv_coll_names[op->u.coll.coll], (unsigned long long)op->u.coll.bytes, op->u.coll.nranks,
               op->u.coll.rank, (unsigned long long)op->u.coll.comm_id, op->u.coll.peer);
      break;
    default:
      snprintf(buf, len, "\"grid\":[%u,%u,%u],\"block\":[%u,%u,%u],\"smem\":%u", op->u.kernel.grid[0],
               op->u.kernel.grid[1], op->u.kernel.grid[2], op->u.kernel.block[0], op->u.kernel.block[1],
               op->u.kernel.block[2], op->u.kernel.smem);
  }
}

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
  trace_catch_up();
  pthread_mutex_lock(&rv_lock);
  trace_flush_deferred_locked(1);
  if (rv_trace_file) fflush(rv_trace_file);
  pthread_mutex_unlock(&rv_lock);
}
