/* Internals shared by the files of the GPU timelines: positions.c, trace.c, timeline.c,
 * collectives.c and graphs.c (in that order of layers: each uses only those before it). */
#ifndef REVATI_TIMELINE_H
#define REVATI_TIMELINE_H

#include "shim.h"

/* --------------------------------------------------------------- positions.c
 * A position is max(b, end(ref[i].key) + ref[i].a) (rv_tpos, shim.h). Launching an op of
 * duration d at host time h maps it to max(b, h) + d with every a_i + d; waiting on an event
 * is a max (union of refs). */

static inline void rv_tpos_at_least(rv_tpos *p, uint64_t t) {
  if (t > p->b) p->b = t;
}

static inline void rv_tpos_add(rv_tpos *p, uint64_t d) {
  p->b += d;
  for (uint32_t i = 0; i < p->n; i++) p->ref[i].a += d;
}

static inline int rv_ckey_eq(const rv_ckey *x, const rv_ckey *y) {
  return x->comm == y->comm && x->chan == y->chan && x->seq == y->seq;
}

void rv_tpos_merge_refs(rv_tpos *p, const rv_tpos *q);
/* p = max(p, q). */
static inline void rv_tpos_merge(rv_tpos *p, const rv_tpos *q) {
  rv_tpos_at_least(p, q->b);
  if (RV_LIKELY(!q->n)) return;
  rv_tpos_merge_refs(p, q);
}

/* The resolved ends of collectives, by key (under rv_lock): get returns 1 when known. */
int rv_rcache_get(const rv_ckey *k, uint64_t *end);
void rv_rcache_put(const rv_ckey *k, uint64_t end);
/* Folds the refs whose end is known into b (under rv_lock). */
void rv_tpos_fold(rv_tpos *p);

typedef struct {
  rv_ckey key;
  uint64_t a;
} rv_tref;

/* A batch of ARRIVE values (the encoding of timewarp.h). */
typedef struct {
  int64_t *v;
  size_t n, cap;
} rv_ibuf;

#define RV_OP_JOIN 255 /* the "op" of a join in ARRIVE */
void rv_ibuf_put(rv_ibuf *b, int64_t x);
void rv_arrival_put(rv_ibuf *b, const rv_ckey *key, int op, int nparts, int slot, uint64_t dur, uint64_t base,
                    const rv_tref *refs, uint32_t nrefs);

/* ------------------------------------------------------------------ trace.c */

/* Keeps the record of an op whose start (or, for a collective, key's end) is not known yet. */
void rv_trace_defer_locked(const struct CUstream_st *s, const rv_op *op, const rv_tpos *start, uint64_t dur,
                           int in_graph, const rv_ckey *key);
/* After a resolve, asks the Timekeeper for the ends the deferred records still lack. Without
 * rv_lock. */
void rv_trace_catch_up(void);
int rv_trace_deferred_locked(void);

/* --------------------------------------------------------------- timeline.c */

/* Implicit synchronization of the legacy default stream with blocking streams: merged into p. */
void rv_legacy_dependency_locked(const struct CUstream_st *s, rv_tpos *p);
/* Counts op and its duration in rv_global_stats. */
void rv_account_locked(const rv_op *op, uint64_t dur);
/* Puts op at position p (advanced past it), on stream s's trace track. */
void rv_place_locked(const struct CUstream_st *s, rv_tpos *p, const rv_op *op, uint64_t dur, int in_graph);

/* ------------------------------------------------------------ collectives.c */

/* Whether op is resolved by the Timekeeper (else it is a local op of its duration). */
int rv_coll_resolved(const rv_op *op);
/* One arrival at position *at (the call's start) appended to batch; its end's position in
 * *end. Returns 0 when the call turned out to be local (a send to an out-of-range peer). */
int rv_coll_arrive_locked(const rv_op *op, uint64_t dur, const rv_tpos *at, rv_ibuf *batch, rv_ckey *key,
                          rv_tpos *end);

#endif
