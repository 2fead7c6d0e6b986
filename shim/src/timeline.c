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
  s->busy_until = 0;
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

/* Implicit synchronization of the legacy default stream with blocking streams. */
static uint64_t legacy_dependency_locked(const struct CUstream_st *s) {
  uint64_t t = 0;
  struct CUstream_st *null_s = rv_devices[s->device].null_stream;
  if (s == null_s) {
    for (size_t i = 0; i < rv_nstreams; i++) {
      const struct CUstream_st *o = rv_streams[i];
      if (o->device == s->device && !(o->flags & 1) && o->busy_until > t) t = o->busy_until;
    }
  } else if (!(s->flags & 1)) {
    t = null_s->busy_until;
  }
  return t;
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

void rv_submit(struct CUstream_st *s, const rv_op *op) {
  if (op->kind == RV_OP_KERNEL) rv_kernel_family((rv_kernel *)op->u.kernel.k);
  pthread_mutex_lock(&rv_lock);
  if (s->capture) {
    rv_graph_append(s->capture, op);
    pthread_mutex_unlock(&rv_lock);
    return;
  }
  uint64_t dur = rv_duration->predict_ns(op, rv_devices[s->device].spec);
  uint64_t start = rv_now_ns();
  if (s->busy_until > start) start = s->busy_until;
  uint64_t dep = legacy_dependency_locked(s);
  if (dep > start) start = dep;
  s->busy_until = start + dur;
  account_locked(op, dur);
  if (rv_trace_on) rv_trace_op(s, op, start, dur, 0);
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
  uint64_t t = s->busy_until, dep = legacy_dependency_locked(s);
  pthread_mutex_unlock(&rv_lock);
  rv_wait_until(dep > t ? dep : t);
}

void rv_device_sync(int dev) {
  uint64_t t = 0;
  pthread_mutex_lock(&rv_lock);
  for (size_t i = 0; i < rv_nstreams; i++)
    if (rv_streams[i]->device == dev && rv_streams[i]->busy_until > t) t = rv_streams[i]->busy_until;
  pthread_mutex_unlock(&rv_lock);
  rv_wait_until(t);
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
    uint64_t dep = legacy_dependency_locked(s);
    uint64_t t = s->busy_until > now ? s->busy_until : now;
    e->time = dep > t ? dep : t;
  }
  e->recorded = 1;
  pthread_mutex_unlock(&rv_lock);
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
  } else if (e->recorded && e->time > s->busy_until) {
    s->busy_until = e->time;
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

void rv_graph_launch(const rv_graph *x, struct CUstream_st *s) {
  pthread_mutex_lock(&rv_lock);
  if (s->capture) { /* a graph launched inside a capture becomes part of it */
    for (size_t i = 0; i < x->n; i++) rv_graph_append(s->capture, &x->nodes[i]);
    pthread_mutex_unlock(&rv_lock);
    return;
  }
  const rv_gpu_spec *gpu = rv_devices[s->device].spec;
  uint64_t start = rv_now_ns();
  if (s->busy_until > start) start = s->busy_until;
  uint64_t dep = legacy_dependency_locked(s);
  if (dep > start) start = dep;
  uint64_t t = start;
  for (size_t i = 0; i < x->n; i++) {
    const rv_op *op = &x->nodes[i];
    uint64_t dur = rv_duration->predict_ns(op, gpu);
    account_locked(op, dur);
    if (rv_trace_on) rv_trace_op(s, op, t, dur, 1);
    t += dur;
  }
  s->busy_until = t;
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
  if (!rv_trace_file) return;
  FILE *f = rv_trace_file;
  int pid = (int)getpid();
  int seen = 0;
  for (int i = 0; i < rv_trace_nseen; i++) if (rv_trace_seen[i] == s->id) { seen = 1; break; }
  if (!seen && rv_trace_nseen < 256) {
    rv_trace_seen[rv_trace_nseen++] = s->id;
    fprintf(f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%llu,\"args\":{\"name\":\"GPU %d stream %llu\"}}\n",
            pid, (unsigned long long)s->id, s->device, (unsigned long long)s->id);
  }
  static const char *const kinds[] = {"kernel", "gemm", "memcpy", "memset", "collective"};
  char args[512];
  rv_op_describe(op, args, sizeof args);
  fprintf(f, "{\"ph\":\"X\",\"pid\":%d,\"tid\":%llu,\"ts\":%.3f,\"dur\":%.3f,\"cat\":\"%s\",\"name\":\"",
          pid, (unsigned long long)s->id, start / 1000.0, dur / 1000.0,
          op->kind == RV_OP_KERNEL ? rv_family_names[op->u.kernel.k->family] : kinds[op->kind]);
  if (op->kind == RV_OP_KERNEL) {
    rv_kernel *k = (rv_kernel *)op->u.kernel.k;
    const char *d = rv_kernel_demangled(k);
    size_t cut = strcspn(d, "(<");
    json_escape(f, d, cut > 120 ? 120 : cut);
    fprintf(f, "\",\"args\":{%s,\"graph\":%d,\"mangled\":\"", args, in_graph);
    json_escape(f, k->mangled, 2000);
    fprintf(f, "\",\"demangled\":\"");
    json_escape(f, d, 2000);
    fputs("\"}}\n", f);
  } else if (op->kind == RV_OP_COLLECTIVE) {
    fprintf(f, "%s\",\"args\":{%s,\"graph\":%d}}\n", rv_coll_names[op->u.coll.coll], args, in_graph);
  } else {
    fprintf(f, "%s\",\"args\":{%s,\"graph\":%d}}\n", kinds[op->kind], args, in_graph);
  }
}

void rv_trace_flush(void) {
  pthread_mutex_lock(&rv_lock);
  if (rv_trace_file) fflush(rv_trace_file);
  pthread_mutex_unlock(&rv_lock);
}
