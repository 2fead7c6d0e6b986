/* The shim's vocabulary of ops: the names of kernel families, dtypes and collectives, an
 * op's description (for the trace and logs), and graphs as lists of ops (what a capture
 * records and an instantiated graph replays, graphs.c).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>

#include "shim.h"

const char *const rv_family_names[RV_FAM_COUNT] = {
    "unknown", "attention", "norm", "rotary", "activation", "cache_write", "sampler",
    "triton", "elementwise", "reduce", "gemm_kernel", "copy_kernel", "moe"};
const char *const rv_dtype_names[RV_DT_COUNT] = {"unknown", "fp32", "fp16", "bf16", "fp8_e4m3",
                                                 "fp8_e5m2", "fp64", "int8", "int32", "tf32"};
const char *const rv_coll_names[RV_COLL_COUNT] = {"all_reduce", "all_gather", "reduce_scatter",
                                                  "broadcast", "reduce", "send", "recv", "all_to_all"};

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

/* ----------------------------------------------------------------------- graphs */

static uint64_t rv_next_graph_id = 1;

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

rv_graph *rv_graph_instantiate(const rv_graph *g) {
  rv_graph *x = rv_graph_new();
  x->instantiated = 1;
  for (size_t i = 0; i < g->n; i++) rv_graph_append(x, &g->nodes[i]);
  return x;
}
