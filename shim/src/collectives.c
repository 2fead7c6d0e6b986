/* Collectives on the virtual timelines (the NCCL entry points are in nccl.c).
 *
 * With the time warp on, a call on a communicator of several ranks is an arrival: its key
 * (rv_coll_next_key), the stream's position when it starts (which may itself follow earlier
 * pending collectives) and its predicted duration go to the Timekeeper in one message, and the
 * thread goes on at once. The stream then ends at the collective's end, which the Timekeeper
 * computes as max(arrivals) + duration once every rank has arrived; the host learns it when
 * it needs it (a sync or a query, timeline.c). Calls between ncclGroupStart and ncclGroupEnd all start at the
 * stream's position at the group's first call on it, and the stream goes on after the latest
 * of their ends. Without the time warp, a collective is an op of its predicted duration. */
#define _GNU_SOURCE
#include <stdlib.h>

#include "shim.h"
#include "timeline.h"
#include "timewarp.h"

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
  for (int i = 0; i < rv_grp.n; i++) rv_tpos_merge(&rv_grp.e[i].s->pos, &rv_grp.e[i].end);
  pthread_mutex_unlock(&rv_lock);
  rv_grp.active = 0;
  rv_grp.n = 0;
}

/* Numbers this rank's next call of op on communicator c. */
int rv_coll_next_key(struct ncclComm *c, const rv_op *op, rv_ckey *key, int *slot) {
  int peer = op->u.coll.peer;
  key->comm = c->id;
  switch (op->u.coll.coll) {
    case RV_COLL_SEND:
    case RV_COLL_RECV: {
      if (peer < 0 || peer >= c->nranks) return 1;
      int send = op->u.coll.coll == RV_COLL_SEND;
      int src = send ? c->rank : peer, dst = send ? peer : c->rank;
      key->chan = 1 + (uint64_t)src * 65536 + (uint64_t)dst;
      key->seq = send ? c->send_seq[peer]++ : c->recv_seq[peer]++;
      *slot = send ? 0 : 1;
      return 2;
    }
    default:
      key->chan = 0;
      key->seq = c->coll_seq++;
      *slot = c->rank;
      return c->nranks;
  }
}

/* Whether op is resolved by the Timekeeper (else it is a local op of its duration). */
int rv_coll_resolved(const rv_op *op) {
  return rv_tw_on && op->kind == RV_OP_COLLECTIVE && op->u.coll.comm && op->u.coll.nranks > 1;
}

/* One arrival at position *at (the call's start); returns its end's position in *end.
 * Returns 0 when the call turned out to be local (a send to an out-of-range peer). */
int rv_coll_arrive_locked(const rv_op *op, uint64_t dur, const rv_tpos *at, rv_ibuf *batch, rv_ckey *key,
                              rv_tpos *end) {
  int slot = 0;
  int nparts = rv_coll_next_key(op->u.coll.comm, op, key, &slot);
  if (nparts <= 1) return 0;
  rv_tref refs[RV_TREF_MAX];
  for (uint32_t i = 0; i < at->n; i++) { refs[i].key = at->ref[i].key; refs[i].a = at->ref[i].a; }
  rv_arrival_put(batch, key, op->u.coll.coll, nparts, slot, dur, at->b, refs, at->n);
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
  rv_account_locked(&op, dur);
  if (!rv_coll_resolved(&op)) {
    rv_legacy_dependency_locked(s, &s->pos);
    rv_tpos_at_least(&s->pos, now);
    rv_an_gpu(s->pos.b, s->pos.b + dur);
    rv_place_locked(s, &s->pos, &op, dur, 0);
    pthread_mutex_unlock(&rv_lock);
    return;
  }
  rv_tpos at = s->pos, *gend = NULL;
  rv_legacy_dependency_locked(s, &at);
  rv_tpos_at_least(&at, now);
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
  if (!rv_coll_arrive_locked(&op, dur, &at, &batch, &key, &end) || rv_tw_arrive(batch.v, batch.n) < 0) {
    /* local after all (no Timekeeper): an op of its duration */
    s->pos = at;
    rv_an_gpu(s->pos.b, s->pos.b + dur);
    rv_place_locked(s, &s->pos, &op, dur, 0);
    pthread_mutex_unlock(&rv_lock);
    return;
  }
  rv_an_gpu(at.b, at.b + dur); /* from this rank's arrival: the lower bound of its end */
  if (rv_trace_on) rv_trace_defer_locked(s, &op, &at, dur, 0, &key);
  if (gend) rv_tpos_merge(gend, &end);
  else s->pos = end;
  pthread_mutex_unlock(&rv_lock);
}
