/* CUDA-graph replay: a captured graph (a list of ops, ops.c; captures are a state of the
 * streams, timeline.c) put on a stream's timeline, as one jump of its nodes' durations.
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include "shim.h"
#include "timeline.h"
#include "timewarp.h"

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
  rv_legacy_dependency_locked(s, &t);
  rv_tpos_at_least(&t, now);
  uint64_t start = t.b;
  rv_ibuf batch = {0};
  uint32_t group = 0;
  rv_tpos gstart, gend;
  for (size_t i = 0; i < x->n; i++) {
    const rv_op *op = &x->nodes[i];
    uint64_t dur = rv_duration->predict_ns(op, gpu);
    rv_account_locked(op, dur);
    uint32_t g = op->kind == RV_OP_COLLECTIVE ? op->u.coll.group : 0;
    if (group && g != group) { /* the group ended: go on after its latest end */
      t = gend;
      group = 0;
    }
    rv_ckey key;
    rv_tpos end;
    if (rv_coll_resolved(op)) {
      if (g && !group) {
        group = g;
        gstart = t;
        gend.b = t.b;
        gend.n = 0;
      }
      rv_tpos *at = group ? &gstart : &t;
      if (rv_coll_arrive_locked(op, dur, at, &batch, &key, &end)) {
        if (rv_trace_on) rv_trace_defer_locked(s, op, at, dur, 1, &key);
        if (group) rv_tpos_merge(&gend, &end);
        else t = end;
        continue;
      }
    }
    rv_place_locked(s, group ? &gend : &t, op, dur, 1);
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
