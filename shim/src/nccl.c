/* NCCL: communicators and collectives on the calling stream's timeline.
 *
 * Each collective is one op with its kind, bytes and rank count. With the time warp on, the
 * Timekeeper resolves it across ranks: every rank numbers its calls per communicator (and per
 * peer for send/recv), sends its arrival, and every rank's stream ends at
 * end = max(arrivals) + duration (collectives.c, revati/timekeeper/collectives.py). Without the
 * time warp each rank records its own arrival and the predicted duration (an approximation:
 * the ranks' ends do not agree). */
#define _GNU_SOURCE
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "shim.h"
#include "timewarp.h"

#define API RV_EXPORT

static __thread int rv_group_depth;

static struct ncclComm *comm_new(uint64_t id, int nranks, int rank, int device) {
  struct ncclComm *c = calloc(1, sizeof *c);
  c->id = id;
  c->nranks = nranks;
  c->rank = rank;
  c->device = device;
  c->send_seq = calloc((size_t)nranks, sizeof *c->send_seq);
  c->recv_seq = calloc((size_t)nranks, sizeof *c->recv_seq);
  rv_tw_comm(id, nranks, rank);
  return c;
}

static uint64_t id_hash(const ncclUniqueId *u) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < sizeof u->internal; i++) h = (h ^ (uint8_t)u->internal[i]) * 1099511628211ULL;
  return h;
}

static size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: case ncclFloat8e4m3: case ncclFloat8e5m2: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    default: return 8;
  }
}

API ncclResult_t ncclGetVersion(int *v) { *v = NCCL_VERSION_CODE; return ncclSuccess; }
API ncclResult_t ncclGetUniqueId(ncclUniqueId *u) {
  rv_ensure_init();
  memset(u, 0, sizeof *u);
  if (getrandom(u->internal, 16, 0) != 16) return ncclSystemError;
  return ncclSuccess;
}
API const char *ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage (or not supported by the emulator)";
    default: return "unhandled error";
  }
}
API const char *ncclGetLastError(ncclComm_t comm) { (void)comm; return ""; }

API ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t *cfg) {
  (void)cfg;
  rv_ensure_init();
  if (nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
  struct ncclComm *c = comm_new(id_hash(&id), nranks, rank, rv_current_device());
  *comm = c;
  RV_LOG(RV_LOG_INFO, "nccl comm %016llx rank %d/%d on device %d", (unsigned long long)c->id, rank, nranks, c->device);
  return ncclSuccess;
}
API ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
  return ncclCommInitRankConfig(comm, nranks, id, rank, NULL);
}
API ncclResult_t ncclCommInitAll(ncclComm_t *comms, int ndev, const int *devlist) {
  ncclUniqueId id;
  ncclGetUniqueId(&id);
  for (int i = 0; i < ndev; i++) {
    int saved = rv_current_device();
    rv_set_current_device(devlist ? devlist[i] : i);
    ncclCommInitRank(&comms[i], ndev, id, i);
    rv_set_current_device(saved);
  }
  return ncclSuccess;
}
API ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t *newcomm, ncclConfig_t *cfg) {
  (void)cfg;
  /* Every rank of comm calls the split, in the same order: the n-th split of a comm gets the
   * same id on all ranks, and two splits with one color do not share an id. */
  uint64_t n = comm->splits++;
  if (color < 0) { *newcomm = NULL; return ncclSuccess; }
  /* NOTE: the new comm's size is not known without the other ranks' colors; like before, it
   * keeps the parent's size and the rank is the key when that fits. */
  uint64_t id = (comm->id ^ (n + 1) * 0x9e3779b97f4a7c15ULL) * 31 + (uint64_t)color + 1;
  *newcomm = comm_new(id, comm->nranks, key < comm->nranks ? key : comm->rank, comm->device);
  return ncclSuccess;
}
/* NOTE: communicators are never freed: graphs captured on one keep a pointer to it. */
API ncclResult_t ncclCommFinalize(ncclComm_t comm) { (void)comm; return ncclSuccess; }
API ncclResult_t ncclCommDestroy(ncclComm_t comm) { (void)comm; return ncclSuccess; }
API ncclResult_t ncclCommAbort(ncclComm_t comm) { (void)comm; return ncclSuccess; }
API ncclResult_t ncclCommCount(const ncclComm_t comm, int *n) { *n = comm->nranks; return ncclSuccess; }
API ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int *dev) { *dev = comm->device; return ncclSuccess; }
API ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank) { *rank = comm->rank; return ncclSuccess; }
API ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *err) { (void)comm; *err = ncclSuccess; return ncclSuccess; }
API ncclResult_t ncclCommRegister(const ncclComm_t comm, void *buf, size_t size, void **handle) {
  (void)comm; (void)size;
  *handle = buf;
  return ncclSuccess;
}
API ncclResult_t ncclCommDeregister(const ncclComm_t comm, void *handle) { (void)comm; (void)handle; return ncclSuccess; }
API ncclResult_t ncclMemAlloc(void **ptr, size_t size) { return rv_dev_malloc(rv_current_device(), size, ptr) ? ncclSystemError : ncclSuccess; }
API ncclResult_t ncclMemFree(void *ptr) { rv_dev_free(ptr); return ncclSuccess; }
API ncclResult_t ncclGroupStart(void) {
  if (rv_group_depth++ == 0) rv_coll_group_begin();
  return ncclSuccess;
}
API ncclResult_t ncclGroupEnd(void) {
  if (rv_group_depth > 0 && --rv_group_depth == 0) rv_coll_group_end();
  return ncclSuccess;
}
API ncclResult_t ncclRedOpCreatePreMulSum(ncclRedOp_t *op, void *scalar, ncclDataType_t t, ncclScalarResidence_t r,
                                          ncclComm_t comm) {
  (void)scalar; (void)t; (void)r; (void)comm;
  *op = (ncclRedOp_t)ncclNumOps;
  return ncclSuccess;
}
API ncclResult_t ncclRedOpDestroy(ncclRedOp_t op, ncclComm_t comm) { (void)op; (void)comm; return ncclSuccess; }

static ncclResult_t record(int coll, size_t bytes, int peer, ncclComm_t comm, cudaStream_t stream,
                           void *dst, const void *src, size_t copy_bytes) {
  if (!comm) return ncclInvalidArgument;
  rv_op op;
  memset(&op, 0, sizeof op);
  op.kind = RV_OP_COLLECTIVE;
  op.api = 4;
  op.u.coll.coll = (uint8_t)coll;
  op.u.coll.bytes = bytes;
  op.u.coll.comm_id = comm->id;
  op.u.coll.comm = comm;
  op.u.coll.nranks = comm->nranks;
  op.u.coll.rank = comm->rank;
  op.u.coll.peer = peer;
  /* Out-of-place collectives leave this rank's own contribution in the output. */
  if (dst && src && dst != src && copy_bytes) rv_copy_effect(dst, src, copy_bytes);
  rv_coll_submit(rv_stream_resolve(stream), &op);
  return ncclSuccess;
}

API ncclResult_t ncclAllReduce(const void *s, void *r, size_t n, ncclDataType_t t, ncclRedOp_t op, ncclComm_t c, cudaStream_t st) {
  (void)op;
  return record(RV_COLL_ALL_REDUCE, n * type_size(t), -1, c, st, r, s, n * type_size(t));
}
API ncclResult_t ncclAllGather(const void *s, void *r, size_t n, ncclDataType_t t, ncclComm_t c, cudaStream_t st) {
  size_t b = n * type_size(t);
  return record(RV_COLL_ALL_GATHER, b, -1, c, st, c ? (char *)r + (size_t)c->rank * b : NULL, s, b);
}
API ncclResult_t ncclReduceScatter(const void *s, void *r, size_t n, ncclDataType_t t, ncclRedOp_t op, ncclComm_t c, cudaStream_t st) {
  (void)op; (void)s; (void)r;
  return record(RV_COLL_REDUCE_SCATTER, n * type_size(t) * (size_t)(c ? c->nranks : 1), -1, c, st, NULL, NULL, 0);
}
API ncclResult_t ncclBroadcast(const void *s, void *r, size_t n, ncclDataType_t t, int root, ncclComm_t c, cudaStream_t st) {
  return record(RV_COLL_BROADCAST, n * type_size(t), root, c, st, r, s, n * type_size(t));
}
API ncclResult_t ncclBcast(void *b, size_t n, ncclDataType_t t, int root, ncclComm_t c, cudaStream_t st) {
  (void)b;
  return record(RV_COLL_BROADCAST, n * type_size(t), root, c, st, NULL, NULL, 0);
}
API ncclResult_t ncclReduce(const void *s, void *r, size_t n, ncclDataType_t t, ncclRedOp_t op, int root, ncclComm_t c, cudaStream_t st) {
  (void)op;
  return record(RV_COLL_REDUCE, n * type_size(t), root, c, st, r, s, n * type_size(t));
}
API ncclResult_t ncclSend(const void *s, size_t n, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t st) {
  (void)s;
  return record(RV_COLL_SEND, n * type_size(t), peer, c, st, NULL, NULL, 0);
}
API ncclResult_t ncclRecv(void *r, size_t n, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t st) {
  (void)r;
  return record(RV_COLL_RECV, n * type_size(t), peer, c, st, NULL, NULL, 0);
}
API ncclResult_t ncclAlltoAll(const void *s, void *r, size_t n, ncclDataType_t t, ncclComm_t c, cudaStream_t st) {
  (void)s; (void)r;
  return record(RV_COLL_ALL_TO_ALL, n * type_size(t) * (size_t)(c ? c->nranks : 1), -1, c, st, NULL, NULL, 0);
}
