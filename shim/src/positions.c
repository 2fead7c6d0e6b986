/* Positions on a virtual timeline, the cache of resolved ends, and joins.
 *
 * A stream's position is an rv_tpos: max(b, end(key_i) + a_i). Launching an op of duration d
 * at host time h maps it to max(b, h) + d with every a_i + d; waiting on an event is a max
 * (union of refs). So a stream goes on after a collective without knowing its end: the end is
 * asked of the Timekeeper (rv_tw_resolve) only where the host needs an absolute time (a sync,
 * a query, elapsed time, a trace record). Resolved ends are cached here (rcache). A position
 * holds at most RV_TREF_MAX refs; more become a join, one arrival standing for their max.
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include "shim.h"
#include "timeline.h"
#include "timewarp.h"

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

int rv_rcache_get(const rv_ckey *k, uint64_t *end) {
  size_t i = rcache_slot(k);
  if (!rv_rcache[i].valid || !rv_ckey_eq(&rv_rcache[i].k, k)) return 0;
  *end = rv_rcache[i].end;
  return 1;
}

void rv_rcache_put(const rv_ckey *k, uint64_t end) {
  size_t i = rcache_slot(k);
  rv_rcache[i].k = *k;
  rv_rcache[i].end = end;
  rv_rcache[i].valid = 1;
}

/* Folds the refs whose end is known into b. */
void rv_tpos_fold(rv_tpos *p) {
  uint32_t j = 0;
  for (uint32_t i = 0; i < p->n; i++) {
    uint64_t e;
    if (rv_rcache_get(&p->ref[i].key, &e)) rv_tpos_at_least(p, e + p->ref[i].a);
    else p->ref[j++] = p->ref[i];
  }
  p->n = j;
}

void rv_ibuf_put(rv_ibuf *b, int64_t x) {
  if (b->n == b->cap) {
    b->cap = b->cap ? 2 * b->cap : 256;
    b->v = realloc(b->v, b->cap * sizeof *b->v);
  }
  b->v[b->n++] = x;
}

/* Appends an arrival to an ARRIVE batch (the encoding of timewarp.h). */
void rv_arrival_put(rv_ibuf *b, const rv_ckey *key, int op, int nparts, int slot, uint64_t dur,
                        uint64_t base, const rv_tref *refs, uint32_t nrefs) {
  rv_ibuf_put(b, (int64_t)key->comm);
  rv_ibuf_put(b, (int64_t)key->chan);
  rv_ibuf_put(b, (int64_t)key->seq);
  rv_ibuf_put(b, op);
  rv_ibuf_put(b, nparts);
  rv_ibuf_put(b, slot);
  rv_ibuf_put(b, (int64_t)dur);
  rv_ibuf_put(b, (int64_t)base);
  rv_ibuf_put(b, nrefs);
  for (uint32_t i = 0; i < nrefs; i++) {
    rv_ibuf_put(b, (int64_t)refs[i].key.comm);
    rv_ibuf_put(b, (int64_t)refs[i].key.chan);
    rv_ibuf_put(b, (int64_t)refs[i].key.seq);
    rv_ibuf_put(b, (int64_t)refs[i].a);
  }
}

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
  rv_arrival_put(&b, &key, RV_OP_JOIN, 1, 0, 0, p->b, refs, n);
  p->n = 0;
  if (rv_tw_arrive(b.v, b.n) == 0) {
    p->n = 1;
    p->ref[0].key = key;
    p->ref[0].a = 0;
  } /* else no Timekeeper: b stays the lower bound it is */
}

/* p = max(p, q) when q has refs (rv_tpos_merge, timeline.h, does the rest inline). */
void rv_tpos_merge_refs(rv_tpos *p, const rv_tpos *q) {
  rv_tref tmp[2 * RV_TREF_MAX];
  uint32_t n = 0;
  for (uint32_t i = 0; i < p->n; i++) { tmp[n].key = p->ref[i].key; tmp[n++].a = p->ref[i].a; }
  for (uint32_t i = 0; i < q->n; i++) {
    uint32_t k = 0;
    while (k < n && !rv_ckey_eq(&tmp[k].key, &q->ref[i].key)) k++;
    if (k < n) { if (q->ref[i].a > tmp[k].a) tmp[k].a = q->ref[i].a; }
    else { tmp[n].key = q->ref[i].key; tmp[n++].a = q->ref[i].a; }
  }
  if (n > RV_TREF_MAX) { /* known ends first: a join costs a message */
    uint32_t j = 0;
    for (uint32_t i = 0; i < n; i++) {
      uint64_t e;
      if (rv_rcache_get(&tmp[i].key, &e)) rv_tpos_at_least(p, e + tmp[i].a);
      else tmp[j++] = tmp[i];
    }
    n = j;
  }
  tpos_set_refs(p, tmp, n);
}
