/* Internal interfaces of the revati shim.
 *
 * This header does not include any NVIDIA header, so every translation unit can include it
 * next to the real cuda.h / cuda_runtime_api.h / cublas / nccl / nvml prototypes. Opaque
 * handle types of those APIs (struct CUstream_st, ...) are *defined* here: a cudaStream_t
 * handed to torch is a pointer to our own stream object.
 */
#ifndef REVATI_SHIM_H
#define REVATI_SHIM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define RV_EXPORT __attribute__((visibility("default")))

#define RV_LIKELY(x) __builtin_expect(!!(x), 1)
#define RV_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---------------------------------------------------------------- init and logging */

enum { RV_LOG_ERROR = 0, RV_LOG_WARN = 1, RV_LOG_INFO = 2, RV_LOG_DEBUG = 3 };
extern int rv_log_level; /* read once at init from REVATI_LOG_LEVEL */

/* base.c: the layer every other file may use. */
void rv_log_init(void); /* REVATI_LOG_LEVEL, REVATI_LOG_FILE */
void rv_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define RV_LOG(level, ...)                                                                        \
  do {                                                                                            \
    if (RV_UNLIKELY((level) <= rv_log_level)) rv_log(level, __VA_ARGS__);                         \
  } while (0)

/* init.c: initializes the shim once; every entry point calls it first. */
void rv_ensure_init(void);

/* The libraries whose entry points the shim exports (entrypoints.def). */
enum rv_lib { RV_LIB_CUDART, RV_LIB_CUDA, RV_LIB_CUBLAS, RV_LIB_CUBLASLT, RV_LIB_NCCL, RV_LIB_NVML };

/* entries.c. Sorts the name table (at init). */
void rv_entries_init(void);
/* Called by every generated stub: logs the name once, returns the lib's "not supported". */
int rv_stub_hit(int index);
/* Address of an exported entry point by exact name, or NULL. */
void *rv_lookup_entry(const char *name);
/* Address for a driver symbol requested by base name ("cuMemAlloc") and CUDA version,
 * as cuGetProcAddress does: picks the newest _vN variant (and _ptds/_ptsz ones for
 * per-thread default-stream requests). */
void *rv_lookup_driver_symbol(const char *base, int cuda_version, int per_thread);
/* Counters of unimplemented entry points hit (for tests and the report). */
uint64_t rv_stub_hits_total(void);

/* --------------------------------------------------------------------- devices */

typedef struct rv_gpu_spec {
  const char *key;
  const char *name;
  uint64_t memory_bytes;
  int sm_count, cc_major, cc_minor;
  uint64_t l2_bytes;
  int sm_clock_mhz, mem_clock_mhz, mem_bus_width_bits;
  int smem_per_block_optin, smem_per_sm, max_threads_per_sm, regs_per_sm;
  int power_limit_w, pcie_gen, nvlink;
  double interconnect_gbps, peak_tflops_bf16, peak_tflops_fp8, peak_tflops_fp32, peak_tflops_tf32;
  double mem_bw_gbps;
  int max_gpus_per_node;
} rv_gpu_spec;

extern const rv_gpu_spec rv_catalog[];
extern const int rv_catalog_len;

#define RV_MAX_DEVICES 16

typedef struct rv_device {
  int physical;              /* index on the virtual node (NVML index) */
  const rv_gpu_spec *spec;
  char uuid[48];             /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
  uint8_t uuid_bytes[16];    /* the same UUID as 16 bytes (cudaDeviceProp, cuDeviceGetUuid) */
  char pci_bus_id[32];       /* "00000000:18:00.0" */
  int pci_bus;
  uint64_t capacity;         /* bytes an allocation may use (memory - context reserve) */
  uint64_t used;             /* bytes currently allocated */
  uint64_t peak_used;
  struct CUstream_st *null_stream;
  int initialized;
} rv_device;

extern const rv_gpu_spec *rv_gpu;    /* the chosen catalog part (REVATI_GPU) */
extern int rv_num_physical;          /* devices on the virtual node (REVATI_NUM_GPUS) */
extern int rv_num_visible;           /* after CUDA_VISIBLE_DEVICES */
extern rv_device rv_devices[RV_MAX_DEVICES];    /* indexed by visible ordinal */
extern rv_device rv_physical[RV_MAX_DEVICES];   /* indexed by physical index (NVML) */
extern uint64_t rv_context_reserve;  /* bytes the "driver context" holds per device */

int rv_current_device(void);
void rv_set_current_device(int dev);
rv_device *rv_device_get(int dev); /* visible ordinal, NULL if out of range */
/* Resident blocks per SM for a block size and dynamic shared memory (occupancy APIs). */
int rv_occupancy(int dev, int block_size, size_t smem);
/* Driver-API device attribute by CUdevice_attribute number. Returns 0 on success. */
int rv_device_attribute(int dev, int attr, int *value);

/* ---------------------------------------------------------------------- memory */

enum rv_mem_kind { RV_MEM_NONE = 0, RV_MEM_DEVICE = 1, RV_MEM_HOST = 2 };

typedef struct rv_alloc_info {
  int kind;          /* rv_mem_kind */
  int device;        /* visible ordinal for device memory */
  uintptr_t base;
  size_t size;
  int backed;        /* host-backed device memory: copies into it are real */
} rv_alloc_info;

/* Returns 0, or -1 when the device's capacity would be exceeded. */
int rv_dev_malloc(int dev, size_t size, void **out);
int rv_dev_free(void *ptr);
int rv_host_alloc(size_t size, void **out);
int rv_host_free(void *ptr);
int rv_host_register(void *ptr, size_t size);
int rv_host_unregister(void *ptr);
/* Classifies any pointer. Returns the kind and fills info when non-NULL. */
int rv_classify(const void *ptr, rv_alloc_info *info);
void rv_mem_get_info(int dev, size_t *free_bytes, size_t *total_bytes);

enum rv_copy_dir { RV_H2H = 0, RV_H2D = 1, RV_D2H = 2, RV_D2D = 3 };
/* Performs the host-visible effect of a copy (real bytes for control data, dropped for
 * bulk memory) and returns its direction. */
int rv_copy_effect(void *dst, const void *src, size_t bytes);
void rv_memset_effect(void *dst, int value, size_t bytes);
uint64_t rv_host_rss_bytes(void);

/* ------------------------------------------------------------------- operations */

enum rv_op_kind { RV_OP_KERNEL = 0, RV_OP_GEMM, RV_OP_MEMCPY, RV_OP_MEMSET, RV_OP_COLLECTIVE, RV_OP_KINDS };

/* Kernel families (for prediction and the per-family breakdown). */
enum rv_family {
  RV_FAM_UNKNOWN = 0, RV_FAM_ATTENTION, RV_FAM_NORM, RV_FAM_ROTARY, RV_FAM_ACTIVATION,
  RV_FAM_CACHE_WRITE, RV_FAM_SAMPLER, RV_FAM_TRITON, RV_FAM_ELEMENTWISE, RV_FAM_REDUCE,
  RV_FAM_GEMM_KERNEL, RV_FAM_COPY_KERNEL, RV_FAM_MOE, RV_FAM_COUNT
};
extern const char *const rv_family_names[RV_FAM_COUNT];

/* dtypes of GEMM operands, a small closed set. */
enum rv_dtype { RV_DT_UNKNOWN = 0, RV_DT_F32, RV_DT_F16, RV_DT_BF16, RV_DT_F8E4M3, RV_DT_F8E5M2,
                RV_DT_F64, RV_DT_I8, RV_DT_I32, RV_DT_TF32, RV_DT_COUNT };
extern const char *const rv_dtype_names[RV_DT_COUNT];

enum rv_coll { RV_COLL_ALL_REDUCE = 0, RV_COLL_ALL_GATHER, RV_COLL_REDUCE_SCATTER, RV_COLL_BROADCAST,
               RV_COLL_REDUCE, RV_COLL_SEND, RV_COLL_RECV, RV_COLL_ALL_TO_ALL, RV_COLL_COUNT };
extern const char *const rv_coll_names[RV_COLL_COUNT];

/* A kernel known to the shim: registered by nvcc host code (__cudaRegisterFunction),
 * loaded from a module (cuModuleGetFunction, Triton), or created by cuLibrary calls. */
typedef struct rv_kernel {
  const char *mangled;     /* as registered; owned copy */
  char *demangled;         /* lazily demangled, NULL until needed */
  const void *host_fun;    /* nvcc host stub address, or NULL */
  int family;              /* rv_family; -1 until first launch */
  int from_triton;
  int max_dynamic_smem;
  int binary_version;      /* arch of the code the driver would load (fat binary), 0 if unknown */
} rv_kernel;

struct CUfunc_st { rv_kernel k; };
struct CUkern_st { rv_kernel k; };

typedef struct rv_op {
  uint8_t kind;  /* rv_op_kind */
  uint8_t api;   /* where it came from (for the trace): 0 runtime, 1 driver, 2 cublas, 3 cublasLt, 4 nccl */
  union {
    struct {
      const rv_kernel *k;
      uint32_t grid[3], block[3];
      uint32_t smem;
    } kernel;
    struct {
      int64_t m, n, k, batch;
      uint8_t dtype_a, dtype_c, compute;
      uint8_t trans_a, trans_b;
    } gemm;
    struct {
      uint64_t bytes;
      uint8_t dir;         /* rv_copy_dir */
      void *dst;           /* kept for graph replay of the host-visible effect */
      const void *src;
    } copy;
    struct {
      uint64_t bytes;
      void *dst;
      int value;
    } memset;
    struct {
      uint64_t bytes;       /* bytes each rank contributes (send buffer) */
      uint64_t comm_id;
      struct ncclComm *comm; /* numbers the call at submission (or at each graph replay) */
      int32_t nranks, rank, peer;
      uint32_t group;       /* ncclGroupStart/End nesting it was called in (per thread), 0: none */
      uint8_t coll;         /* rv_coll */
      uint8_t dtype;
    } coll;
  } u;
} rv_op;

/* --------------------------------------------------------------- duration source */

/* The pluggable source of op durations (duration.c): the predictor (sidecar, the default),
 * the roofline and constant sources, behind one interface. */
typedef struct rv_duration_source {
  const char *name;
  /* Returns the predicted duration of op on the given part, in ns. */
  uint64_t (*predict_ns)(const rv_op *op, const rv_gpu_spec *gpu);
} rv_duration_source;

extern const rv_duration_source *rv_duration;
void rv_duration_init(const char *spec); /* "sidecar" (default), "roofline" or "constant:1ms" */
/* Counters of the sidecar source's signature cache (all zero for other sources). */
void rv_sidecar_stats(uint64_t *hits, uint64_t *misses, uint64_t *unmapped, uint64_t *errors,
                      uint64_t *mapped_ns, uint64_t *unmapped_ns);
/* The step-attention prefetches: sent, sent a step ahead, read by a miss of their own step, and
 * those of them that waited for the reply. */
void rv_sidecar_prefetch_stats(uint64_t *sent, uint64_t *ahead, uint64_t *used, uint64_t *waited);
/* roofline.c */
uint64_t rv_roofline_ns(const rv_op *op, const rv_gpu_spec *gpu);
extern const rv_duration_source rv_roofline_source;
/* predictor_client.c: the sidecar source (NULL when no sidecar answers), and the vLLM
 * semantic layer's model shape and step composition (revati_set_model, revati_set_step). */
const rv_duration_source *rv_sidecar_init(void);
void rv_set_model(int num_heads, int num_kv_heads, int head_dim, int hidden, int intermediate);
const uint64_t *rv_sidecar_step_family_ns(int unmapped);
void rv_set_mla(int kv_lora_rank, int rope_dim, int qk_nope_dim, int v_head_dim);
void rv_set_moe(int experts_local, int experts_total, int topk, int intermediate, int weight_bytes);
void rv_set_step(int64_t num_tokens, int64_t num_reqs, int64_t num_prefill, int64_t num_decode, int64_t prefill_tokens,
                 int64_t prefill_kv_sum, int64_t prefill_kv_max, int64_t prefill_pairs, int64_t decode_kv_sum,
                 int64_t decode_kv_max);
uint64_t rv_steps_seen_total(void); /* steps handed over so far */

/* ------------------------------------------------------------ streams and graphs */

/* A collective as the Timekeeper names it (time warp on): the communicator (a hash of its
 * unique id), a channel (0 for collectives; 1 + src * 65536 + dst for the send/recv pairs from
 * src to dst; 0 on a process-private "comm" for joins, see positions.c) and the call's number on
 * that channel. Every rank numbers its calls alike, so the ranks' arrivals meet under one key. */
typedef struct rv_ckey {
  uint64_t comm, chan, seq;
} rv_ckey;

/* A point on a virtual timeline: max(b, end(ref[i].key) + ref[i].a over i). With the time warp
 * on, a collective's end is known only once every rank has arrived (the Timekeeper resolves
 * it), so a stream's later work is kept relative to the pending ends it follows; n == 0 is an
 * absolute time b. The form is closed under "then an op of duration d launched at host time h"
 * (b = max(b, h) + d, every a += d) and under max (union of refs), see positions.c. */
#define RV_TREF_MAX 4
typedef struct rv_tpos {
  uint64_t b;
  uint32_t n;
  struct {
    rv_ckey key;
    uint64_t a;
  } ref[RV_TREF_MAX];
} rv_tpos;

typedef struct rv_graph rv_graph;

struct CUstream_st {
  uint64_t id;
  int device;
  unsigned flags;
  int priority;
  rv_tpos pos;           /* where the last enqueued op ends (virtual ns) */
  rv_graph *capture;     /* non-NULL while capturing */
  uint64_t capture_id;
  int capture_mode;
  int capture_origin;    /* this stream began the capture (vs. joined through an event) */
};

struct CUevent_st {
  rv_tpos t;             /* the recorded point (virtual ns) */
  unsigned flags;
  int recorded;
  int device;
  rv_graph *capture;     /* recorded during capture: a wait joins that capture */
  uint64_t capture_id;
};

struct rv_graph {
  rv_op *nodes;
  size_t n, cap;
  uint64_t id;
  int instantiated;      /* for exec graphs */
  uint64_t total_ns;     /* sum of node durations, computed at instantiate */
};
struct CUgraph_st { rv_graph g; };
struct CUgraphExec_st { rv_graph g; };

/* A communicator (nccl.c creates it; collectives.c numbers its calls). */
struct ncclComm {
  uint64_t id;
  int nranks, rank, device;
  uint64_t coll_seq;               /* collectives called so far */
  uint64_t *send_seq, *recv_seq;   /* sends to / receives from each peer */
  uint64_t splits;                 /* ncclCommSplit calls on this comm (the same on every rank) */
};

/* timeline.c, collectives.c, graphs.c and ops.c (graph lists). */
/* Resolves a stream handle (NULL, cudaStreamLegacy, cudaStreamPerThread, or ours). */
struct CUstream_st *rv_stream_resolve(void *handle);
struct CUstream_st *rv_stream_create(int device, unsigned flags, int priority);
void rv_stream_destroy(struct CUstream_st *s);
/* Submits an op: onto the stream's virtual timeline, or into its capture graph. */
void rv_submit(struct CUstream_st *s, const rv_op *op);
/* Host waits until the stream's work is done (virtual time; see timeline.c). */
void rv_stream_sync(struct CUstream_st *s);
void rv_device_sync(int dev);
void rv_event_record(struct CUevent_st *e, struct CUstream_st *s);
void rv_stream_wait_event(struct CUstream_st *s, struct CUevent_st *e);
/* Queries and waits that need a stream's or an event's absolute time (with pending collectives
 * the Timekeeper is asked for their ends; a query never waits for a rank to arrive). */
int rv_stream_done(struct CUstream_st *s);            /* 1: its work has ended by now */
int rv_event_done(struct CUevent_st *e);
void rv_event_sync(struct CUevent_st *e);
double rv_event_elapsed_ms(struct CUevent_st *a, struct CUevent_st *b);
/* NCCL calls (nccl.c): onto the timeline, or into the capture. With the time warp on, a call
 * on a communicator of more than one rank is an arrival the Timekeeper resolves (collectives.c). */
void rv_coll_submit(struct CUstream_st *s, const rv_op *op);
void rv_coll_group_begin(void);                        /* outermost ncclGroupStart */
void rv_coll_group_end(void);                          /* outermost ncclGroupEnd */
/* The Timekeeper's key for this rank's next call of op (under rv_lock). Returns the number
 * of participants (ranks of a collective, 2 for send/recv) and this rank's slot. */
int rv_coll_next_key(struct ncclComm *c, const rv_op *op, rv_ckey *key, int *slot);
int rv_begin_capture(struct CUstream_st *s, int mode);
rv_graph *rv_end_capture(struct CUstream_st *s);
void rv_graph_launch(const rv_graph *exec, struct CUstream_st *s);
rv_graph *rv_graph_new(void);
void rv_graph_append(rv_graph *g, const rv_op *op);
void rv_graph_free(rv_graph *g);
rv_graph *rv_graph_instantiate(const rv_graph *g);

/* The host's notion of "now" on the virtual clock, in ns. */
uint64_t rv_now_ns(void);
/* Blocks the calling host thread until virtual time t (a jump: it costs no wall time). */
void rv_wait_until(uint64_t t);

/* Kernel registry (kernels.c). */
rv_kernel *rv_kernel_register(const void *host_fun, const char *mangled);
rv_kernel *rv_kernel_by_host_fun(const void *host_fun);
rv_kernel *rv_kernel_new(const char *mangled, int from_triton);
const char *rv_kernel_demangled(rv_kernel *k);
int rv_classify_kernel(const char *mangled);
/* The kernel's family, classified from its name on first use. */
int rv_kernel_family(rv_kernel *k);
/* A kernel launch that is a GEMM of a known shape (CUTLASS 3.x: the shape is in its Params):
 * fills op as an RV_OP_GEMM and returns 1; else 0. args: the launch's kernel parameters. */
int rv_kernel_as_gemm(rv_kernel *k, void **args, struct rv_op *op);
/* 1 if an MLA model's attention kernel `mangled` is its latent decode (kernels.c). */
int rv_mla_decode_kernel(const char *mangled, int kv_lora_rank);

/* Global counters (base.c), written out by stats.c. */
typedef struct rv_stats {
  uint64_t ops[RV_OP_KINDS];
  uint64_t graph_launches, graph_nodes_replayed;
  uint64_t busy_ns[RV_OP_KINDS];
  uint64_t family_ns[RV_FAM_COUNT];
  uint64_t family_count[RV_FAM_COUNT];
  uint64_t copies_real_bytes, copies_dropped_bytes;
  uint64_t jumps;
} rv_stats;
extern rv_stats rv_global_stats;
extern pthread_mutex_t rv_lock; /* guards streams, events, graphs, allocator and stats */

/* Trace (REVATI_TRACE, trace.c). */
void rv_trace_init(const char *path);
void rv_trace_op(const struct CUstream_st *s, const rv_op *op, uint64_t start, uint64_t dur, int in_graph);
void rv_trace_flush(void);
extern int rv_trace_on;

/* Names of ops for the trace and logs (ops.c). */
void rv_op_describe(const rv_op *op, char *buf, size_t len);

/* stats.c: REVATI_STATS_FILE (at init), the stats file, and the flush of stats and trace. */
void rv_stats_init(const char *path);
void rv_write_stats(void);
void rv_flush(void);
/* Flushes the trace and statistics at most once a second; the entry points call it at
 * synchronization points. */
void rv_periodic_flush(void);

#endif
