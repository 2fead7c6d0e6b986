/* The "sidecar" duration source: op descriptors, a signature cache, and the sidecar client.
 *
 * Every op becomes the documented descriptor (docs/predictor.md), encoded as msgpack. The
 * encoded bytes are the op's signature: a hit in the cache is a hash and a probe. A miss asks
 * the sidecar (ZeroMQ DEALER -> ROUTER; frames: one type byte, one msgpack payload) and
 * remembers the answer. libzmq is the one pyzmq ships, opened with dlopen (REVATI_ZMQ_LIB),
 * so the shim links nothing new.
 *
 * Kernels other than GEMMs, copies and collectives are described from the step's batch
 * composition, which the vLLM semantic layer hands over through revati_set_step(); kernels
 * that no family covers are described by launch geometry and counted as unmapped.
 *
 * Called with rv_lock held (rv_submit, rv_graph_launch): the socket and cache need no lock.
 *
 * NOTE: the step's attention is asked for ahead (prefetch). Its descriptor changes every step
 * (the context lengths grow), so without this every step missed the cache at its first
 * attention kernel and held the clock for a sidecar round trip (a default run: 9157 holds,
 * 4.7 s of its 22 s load phase). rv_set_step knows the step's attention descriptors before the
 * model runner launches anything: it sends them, without waiting, and the launch that needs one
 * reads its reply, which is usually there by then; it waits (the clock held) only if it is
 * not. The answer is the same one a synchronous miss would get. REVATI_SIDECAR_PREFETCH=0
 * turns it off (the replies come in order on the one DEALER socket: a synchronous request
 * first reads the prefetches' replies).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "msgpack.h"
#include "shim.h"
#include "timewarp.h"

/* ------------------------------------------------------------- step composition */

typedef struct {
  int64_t num_tokens, num_reqs, num_prefill, num_decode;
  int64_t prefill_tokens, prefill_kv_sum, prefill_kv_max, prefill_pairs;
  int64_t decode_kv_sum, decode_kv_max;
} rv_step;

typedef struct {
  int num_heads, num_kv_heads, head_dim, hidden, intermediate, set;
  /* routed experts (revati_set_moe): per GPU, 0 for a dense model */
  int moe_experts, moe_experts_total, moe_topk, moe_intermediate, moe_weight_bytes;
  /* multi-head latent attention (revati_set_mla): 0 for another attention */
  int mla_kv_lora_rank, mla_rope_dim, mla_qk_nope_dim, mla_v_head_dim;
} rv_model;

static rv_step rv_cur_step;
static rv_model rv_model_info;

/* From the vLLM semantic layer (revati_set_model). Values are per GPU (after tensor parallel). */
void rv_set_model(int num_heads, int num_kv_heads, int head_dim, int hidden, int intermediate) {
  rv_model m = rv_model_info; /* keeps the experts, which may be set first */
  m.num_heads = num_heads; m.num_kv_heads = num_kv_heads; m.head_dim = head_dim;
  m.hidden = hidden; m.intermediate = intermediate; m.set = 1;
  rv_model_info = m;
}

void rv_set_mla(int kv_lora_rank, int rope_dim, int qk_nope_dim, int v_head_dim) {
  if (kv_lora_rank <= 0 || rope_dim < 0 || qk_nope_dim <= 0 || v_head_dim <= 0) {
    rv_log(RV_LOG_ERROR, "revati_set_mla: ignoring an impossible latent layout (%d, %d, %d, %d)", kv_lora_rank,
           rope_dim, qk_nope_dim, v_head_dim);
    return;
  }
  rv_model_info.mla_kv_lora_rank = kv_lora_rank; rv_model_info.mla_rope_dim = rope_dim;
  rv_model_info.mla_qk_nope_dim = qk_nope_dim; rv_model_info.mla_v_head_dim = v_head_dim;
}

void rv_set_moe(int experts_local, int experts_total, int topk, int intermediate, int weight_bytes) {
  if (experts_local <= 0 || experts_total < experts_local || topk <= 0 || topk > experts_total ||
      intermediate <= 0 || (weight_bytes != 1 && weight_bytes != 2 && weight_bytes != 4)) {
    rv_log(RV_LOG_ERROR, "revati_set_moe: ignoring an impossible expert layout (%d of %d experts, top-%d, "
           "intermediate %d, %d-byte weights)", experts_local, experts_total, topk, intermediate, weight_bytes);
    return;
  }
  rv_model_info.moe_experts = experts_local; rv_model_info.moe_experts_total = experts_total;
  rv_model_info.moe_topk = topk; rv_model_info.moe_intermediate = intermediate;
  rv_model_info.moe_weight_bytes = weight_bytes;
}

/* Steps handed over by the semantic layer: the report checks that the stats cover the run. */
static uint64_t rv_steps_seen;
uint64_t rv_steps_seen_total(void) { return __atomic_load_n(&rv_steps_seen, __ATOMIC_RELAXED); }

static void rv_prefetch_step(void);

void rv_set_step(int64_t num_tokens, int64_t num_reqs, int64_t num_prefill, int64_t num_decode, int64_t prefill_tokens,
                 int64_t prefill_kv_sum, int64_t prefill_kv_max, int64_t prefill_pairs, int64_t decode_kv_sum,
                 int64_t decode_kv_max) {
  pthread_mutex_lock(&rv_lock);
  rv_cur_step = (rv_step){num_tokens, num_reqs, num_prefill, num_decode, prefill_tokens,
                          prefill_kv_sum, prefill_kv_max, prefill_pairs, decode_kv_sum, decode_kv_max};
  rv_steps_seen++;
  rv_prefetch_step();
  pthread_mutex_unlock(&rv_lock);
}

/* Descriptors are short: a buffer of this size holds the longest (attention, 11 fields). */
#define RV_DESC_MAX 512

/* ----------------------------------------------------------- descriptors per op */

static const char *dtype_name(int dt) {
  switch (dt) {
    case RV_DT_F32: return "fp32";
    case RV_DT_F16: return "fp16";
    case RV_DT_F8E4M3: case RV_DT_F8E5M2: return "fp8";
    default: return "bf16";
  }
}

static int64_t geometry_bytes(const rv_op *op) {
  double threads = (double)op->u.kernel.grid[0] * op->u.kernel.grid[1] * op->u.kernel.grid[2] *
                   op->u.kernel.block[0] * op->u.kernel.block[1] * op->u.kernel.block[2];
  return (int64_t)(threads * 16.0);
}

static void describe_attention_of(rv_mp *w, int prefill, const rv_step *s) {
  const rv_model *m = &rv_model_info;
  rv_mp_map(w, 11);
  rv_mp_kv_str(w, "op", "attention");
  rv_mp_kv_str(w, "phase", prefill ? "prefill" : "decode");
  rv_mp_kv_int(w, "batch_size", prefill ? s->num_prefill : s->num_decode);
  rv_mp_kv_int(w, "num_tokens", prefill ? s->prefill_tokens : s->num_decode);
  rv_mp_kv_int(w, "kv_len_sum", prefill ? s->prefill_kv_sum : s->decode_kv_sum);
  rv_mp_kv_int(w, "kv_len_max", prefill ? s->prefill_kv_max : s->decode_kv_max);
  rv_mp_kv_int(w, "attn_pairs", prefill ? s->prefill_pairs : s->decode_kv_sum);
  rv_mp_kv_int(w, "num_heads", m->num_heads);
  rv_mp_kv_int(w, "num_kv_heads", m->num_kv_heads);
  rv_mp_kv_int(w, "head_dim", m->head_dim);
  rv_mp_kv_str(w, "dtype", "bf16");
}

static void describe_attention(rv_mp *w, int prefill) { describe_attention_of(w, prefill, &rv_cur_step); }

/* The decode part of a mixed (prefill + decode) attention step, or 0 if there is none. */
static int describe_decode_part(const rv_op *op, rv_mp *w) {
  const rv_step *s = &rv_cur_step;
  if (op->kind != RV_OP_KERNEL || op->u.kernel.k->family != RV_FAM_ATTENTION || !rv_model_info.set ||
      s->num_prefill == 0 || s->num_decode == 0 || rv_model_info.mla_kv_lora_rank > 0)
    return 0; /* MLA runs its decode and prefill parts as separate kernels (describe_mla) */
  describe_attention(w, 0);
  return 1;
}

/* The fused-MoE kernels of one layer, told apart by name: the router's top-k (topkGatingSoftmax,
 * grouped_topk ...), the token permutation (moe_align_block_size, count_and_sort ...), the
 * weighted sum over the top-k outputs (moe_sum), and the rest: the grouped expert GEMMs
 * (Triton fused_moe_kernel, CUTLASS/FlashInfer grouped GEMMs), two per layer, gate-up (w13)
 * then down (w2). */
enum { RV_MOE_GEMM, RV_MOE_ROUTE, RV_MOE_ALIGN, RV_MOE_SUM, RV_MOE_OTHER };

static int has_any(const char *n, const char *const *pats) {
  for (; *pats; pats++)
    if (strstr(n, *pats)) return 1;
  return 0;
}

/* NOTE: an explicit list for each kind: a name that only says "moe" (an Inductor kernel fused
 * into the MoE layer's forward, e.g. triton_red_fused_fused_add_rms_norm_moe_forward_0) is not
 * an expert GEMM; charged as one it was a quarter of a Qwen3-MoE step. */
static int moe_kind(const char *n) {
  static const char *const sum[] = {"moe_sum", "finalize", "Finalize", NULL};
  static const char *const route[] = {"opk", "Gating", "gating", "routing", "Routing", NULL};
  static const char *const align[] = {"align", "sort", "Sort", "count", "permute", "Permute", "expand", "Expand",
                                      "shuffle", "problem_sizes", "gemm_starts", NULL};
  static const char *const gemm[] = {"fused_moe", "group_gemm", "grouped_gemm", "GroupedGemm", "GroupGemm",
                                     "moe_gemm", "MoeGemm", "moe_mm", "expert_gemm", NULL};
  if (has_any(n, sum)) return RV_MOE_SUM;
  if (has_any(n, route)) return RV_MOE_ROUTE;
  if (has_any(n, align)) return RV_MOE_ALIGN;
  if (has_any(n, gemm)) return RV_MOE_GEMM;
  return RV_MOE_OTHER;
}

/* Which of a layer's two expert GEMMs this launch is: the first after the router's top-k is the
 * gate-up GEMM, the next the down GEMM; without a top-k kernel (another backend) they alternate.
 * Per thread: graph replays and eager launches walk a layer's kernels in stream order. */
static __thread unsigned rv_moe_gemms_since_route;

/* Returns 0 for a kernel of the MoE family that is none of the kinds above (described by its
 * launch geometry by the caller). */
static int describe_moe(const rv_op *op, rv_mp *w, int64_t tokens) {
  const rv_model *m = &rv_model_info;
  int kind = moe_kind(op->u.kernel.k->mangled);
  if (kind == RV_MOE_OTHER) return 0;
  int64_t assign = tokens * m->moe_topk; /* token-expert pairs (all experts) */
  if (kind == RV_MOE_GEMM) {
    int w13 = (rv_moe_gemms_since_route++ & 1) == 0;
    rv_mp_map(w, 9);
    rv_mp_kv_str(w, "op", "moe");
    rv_mp_kv_str(w, "stage", w13 ? "w13" : "w2");
    rv_mp_kv_int(w, "tokens", tokens);
    rv_mp_kv_int(w, "hidden", m->hidden);
    rv_mp_kv_int(w, "intermediate", m->moe_intermediate);
    rv_mp_kv_int(w, "experts", m->moe_experts);
    rv_mp_kv_int(w, "experts_total", m->moe_experts_total);
    rv_mp_kv_int(w, "topk", m->moe_topk);
    rv_mp_kv_str(w, "dtype", m->moe_weight_bytes == 1 ? "fp8" : "bf16");
    return 1;
  }
  /* The small kernels around them: bytes moved (router logits in, ids and weights out; the
   * permutation's ids; the top-k outputs read and summed). */
  int64_t bytes;
  if (kind == RV_MOE_ROUTE) {
    rv_moe_gemms_since_route = 0;
    bytes = tokens * m->moe_experts_total * 2 + assign * 8;
  } else if (kind == RV_MOE_ALIGN) {
    bytes = assign * 12 + (int64_t)m->moe_experts * 4;
  } else {
    bytes = assign * m->hidden * 2 + tokens * m->hidden * 2;
  }
  rv_mp_map(w, 3);
  rv_mp_kv_str(w, "op", "elementwise"); rv_mp_kv_int(w, "bytes", bytes > 0 ? bytes : 1); rv_mp_kv_int(w, "tokens", tokens);
  return 1;
}

/* An MLA model's attention kernels: the latent decode kernel (FlashMLA, FlashInfer MLA, the Triton
 * grouped decode kernel) gets the step's decode part as an "mla" op; any other attention kernel
 * is the prefill, ordinary attention on the up-projected heads (QK head dim qk_nope + rope). */
static void describe_mla(const rv_op *op, rv_mp *w) {
  const rv_model *m = &rv_model_info;
  const rv_step *s = &rv_cur_step;
  int decode = rv_mla_decode_kernel(op->u.kernel.k->mangled, m->mla_kv_lora_rank);
  if (s->num_prefill == 0) decode = 1;
  if (s->num_decode == 0) decode = 0;
  if (decode) {
    rv_mp_map(w, 6);
    rv_mp_kv_str(w, "op", "mla");
    rv_mp_kv_int(w, "batch_size", s->num_decode > 0 ? s->num_decode : 1);
    rv_mp_kv_int(w, "kv_len_sum", s->decode_kv_sum > 0 ? s->decode_kv_sum : 1);
    rv_mp_kv_int(w, "num_heads", m->num_heads);
    rv_mp_kv_int(w, "kv_lora_rank", m->mla_kv_lora_rank);
    rv_mp_kv_int(w, "rope_dim", m->mla_rope_dim);
    return;
  }
  rv_mp_map(w, 11);
  rv_mp_kv_str(w, "op", "attention");
  rv_mp_kv_str(w, "phase", "prefill");
  rv_mp_kv_int(w, "batch_size", s->num_prefill);
  rv_mp_kv_int(w, "num_tokens", s->prefill_tokens);
  rv_mp_kv_int(w, "kv_len_sum", s->prefill_kv_sum);
  rv_mp_kv_int(w, "kv_len_max", s->prefill_kv_max);
  rv_mp_kv_int(w, "attn_pairs", s->prefill_pairs);
  rv_mp_kv_int(w, "num_heads", m->num_heads);
  rv_mp_kv_int(w, "num_kv_heads", m->num_heads);
  rv_mp_kv_int(w, "head_dim", m->mla_qk_nope_dim + m->mla_rope_dim);
  rv_mp_kv_str(w, "dtype", "bf16");
}

/* Encodes op as its descriptor. Returns 0 when the op has no family the predictor models
 * (the caller then uses the roofline and counts an unmapped op). */
static int describe(const rv_op *op, rv_mp *w, int *mapped) {
  const rv_model *m = &rv_model_info;
  const rv_step *s = &rv_cur_step;
  int64_t tokens = s->num_tokens > 0 ? s->num_tokens : 1;
  *mapped = 1;
  switch (op->kind) {
    case RV_OP_GEMM:
      rv_mp_map(w, 6);
      rv_mp_kv_str(w, "op", "gemm");
      /* cuBLAS and cuBLASLt are column-major: the m x n C they are asked for is the row-major
       * n x m C that torch computes (y = x W^T runs as m = out features, n = tokens). The
       * descriptor is row-major, as the profiles it is trained on (m = tokens, n = out features):
       * swap. Without the swap every decode GEMM was looked up as a 1-row-wide weight shape that
       * no profile has (12288 x 4096 at 1 token: 41.1 us instead of 36.8 us). */
      rv_mp_kv_int(w, "m", op->u.gemm.n); rv_mp_kv_int(w, "n", op->u.gemm.m); rv_mp_kv_int(w, "k", op->u.gemm.k);
      rv_mp_kv_str(w, "dtype", dtype_name(op->u.gemm.dtype_a));
      rv_mp_kv_int(w, "batch", op->u.gemm.batch);
      return 1;
    case RV_OP_MEMCPY: {
      static const char *const dirs[] = {"h2h", "h2d", "d2h", "d2d"};
      if (op->u.copy.dir == RV_H2H) return 0;
      rv_mp_map(w, 3);
      rv_mp_kv_str(w, "op", "memcpy"); rv_mp_kv_int(w, "bytes", (int64_t)op->u.copy.bytes); rv_mp_kv_str(w, "direction", dirs[op->u.copy.dir & 3]);
      return 1;
    }
    case RV_OP_COLLECTIVE: {
      const char *kind = op->u.coll.coll == RV_COLL_SEND || op->u.coll.coll == RV_COLL_RECV ? "send_recv"
                         : op->u.coll.coll <= RV_COLL_BROADCAST ? rv_coll_names[op->u.coll.coll] : NULL;
      if (!kind || op->u.coll.nranks < 2) return 0;
      rv_mp_map(w, 5);
      rv_mp_kv_str(w, "op", "collective"); rv_mp_kv_str(w, "kind", kind); rv_mp_kv_int(w, "bytes", (int64_t)op->u.coll.bytes);
      rv_mp_kv_int(w, "ranks", op->u.coll.nranks);
      rv_mp_kv_str(w, "topology", rv_gpu->nvlink ? "nvswitch" : "pcie");
      return 1;
    }
    case RV_OP_MEMSET:
      rv_mp_map(w, 3);
      rv_mp_kv_str(w, "op", "elementwise"); rv_mp_kv_int(w, "bytes", op->u.memset.bytes ? (int64_t)op->u.memset.bytes : 1);
      rv_mp_kv_int(w, "tokens", tokens);
      return 1;
    default: break;
  }
  int fam = op->u.kernel.k->family;
  if (fam == RV_FAM_ATTENTION && m->set && s->num_reqs > 0 && m->mla_kv_lora_rank > 0) {
    describe_mla(op, w);
    return 1;
  }
  if (fam == RV_FAM_ATTENTION && m->set && s->num_reqs > 0) {
    /* One varlen kernel serves the whole batch; a mixed step is described by its prefill
     * part here and its decode part by describe_decode_part (the caller adds both). */
    describe_attention(w, s->num_prefill > 0);
    return 1;
  }
  if (fam == RV_FAM_MOE && m->set && m->moe_experts > 0 && describe_moe(op, w, tokens)) return 1;
  if (m->set && (fam == RV_FAM_NORM || fam == RV_FAM_ROTARY || fam == RV_FAM_ACTIVATION || fam == RV_FAM_CACHE_WRITE)) {
    const char *opname = fam == RV_FAM_NORM ? "norm" : fam == RV_FAM_ROTARY ? "rotary"
                         : fam == RV_FAM_ACTIVATION ? "activation" : "elementwise";
    int64_t hidden = fam == RV_FAM_ACTIVATION ? m->intermediate
                     : fam == RV_FAM_ROTARY ? (int64_t)(m->num_heads + m->num_kv_heads) * m->head_dim
                     : fam == RV_FAM_CACHE_WRITE ? 2LL * m->num_kv_heads * m->head_dim : m->hidden;
    rv_mp_map(w, 4);
    rv_mp_kv_str(w, "op", opname); rv_mp_kv_int(w, "tokens", tokens); rv_mp_kv_int(w, "hidden", hidden); rv_mp_kv_str(w, "dtype", "bf16");
    return 1;
  }
  /* Everything else (sampler, generic Triton, torch elementwise/reduce/copy, unknown):
   * described by the bytes its launch geometry suggests. */
  *mapped = 0;
  rv_mp_map(w, 3);
  rv_mp_kv_str(w, "op", "elementwise"); rv_mp_kv_int(w, "bytes", geometry_bytes(op) + 1); rv_mp_kv_int(w, "tokens", tokens);
  return 1;
}

/* ------------------------------------------------------------ signature cache */

typedef struct {
  uint64_t key;
  uint64_t ns;
} rv_slot;

static rv_slot *rv_cache;
static size_t rv_cache_cap, rv_cache_n;
static uint64_t rv_hits, rv_misses, rv_unmapped, rv_errors, rv_mapped_ns, rv_unmapped_ns;

static uint64_t fnv(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
  return h | 1; /* 0 marks an empty slot */
}

static rv_slot *cache_find(uint64_t key) {
  size_t i = key & (rv_cache_cap - 1);
  while (rv_cache[i].key && rv_cache[i].key != key) i = (i + 1) & (rv_cache_cap - 1);
  return &rv_cache[i];
}

static void cache_put(uint64_t key, uint64_t ns) {
  if ((rv_cache_n + 1) * 2 > rv_cache_cap) {
    rv_slot *old = rv_cache;
    size_t oldcap = rv_cache_cap;
    rv_cache_cap = oldcap ? oldcap * 2 : 1 << 14;
    rv_cache = calloc(rv_cache_cap, sizeof *rv_cache);
    for (size_t i = 0; i < oldcap; i++) if (old[i].key) *cache_find(old[i].key) = old[i];
    free(old);
  }
  rv_slot *s = cache_find(key);
  if (!s->key) rv_cache_n++;
  s->key = key;
  s->ns = ns;
}

/* Predicted kernel time per kernel family once serving began (the first step the semantic layer
 * reported; the memory profile and warm-up before it run before the model's shape is known), and
 * the part of it that only the launch geometry described: a family's coverage is
 * 1 - unmapped / all (the stats file's "step_family_ns" and "step_unmapped_family_ns"). */
static uint64_t rv_step_family_ns[RV_FAM_COUNT], rv_step_unmapped_family_ns[RV_FAM_COUNT];

const uint64_t *rv_sidecar_step_family_ns(int unmapped) {
  return unmapped ? rv_step_unmapped_family_ns : rv_step_family_ns;
}

static uint64_t account(const rv_op *op, uint64_t ns, int mapped) {
  if (mapped) rv_mapped_ns += ns;
  else { rv_unmapped++; rv_unmapped_ns += ns; }
  if (op->kind == RV_OP_KERNEL && rv_steps_seen) {
    int fam = op->u.kernel.k->family;
    if (fam >= 0 && fam < RV_FAM_COUNT) {
      rv_step_family_ns[fam] += ns;
      if (!mapped) rv_step_unmapped_family_ns[fam] += ns;
    }
  }
  return ns;
}

/* ------------------------------------------------------------ the zmq client */

typedef struct {
  void *(*ctx_new)(void);
  void *(*socket)(void *, int);
  int (*connect)(void *, const char *);
  int (*setsockopt)(void *, int, const void *, size_t);
  int (*send)(void *, const void *, size_t, int);
  int (*recv)(void *, void *, size_t, int);
  int (*getsockopt)(void *, int, void *, size_t *);
} rv_zmq;

#define ZMQ_DEALER 5
#define ZMQ_DONTWAIT 1
#define ZMQ_SNDMORE 2
#define ZMQ_RCVTIMEO 27
#define ZMQ_SNDTIMEO 28
#define ZMQ_LINGER 17
#define ZMQ_RCVMORE 13

static rv_zmq z;
static void *rv_sock;
static pid_t rv_sock_pid;   /* the process that opened rv_sock */
static char rv_sock_ep[256];
static int rv_sidecar_ok;
static uint8_t rv_reply[1 << 16];

/* The prefetches sent whose replies are not read yet, oldest first (see the NOTE at the top). */
#define RV_PF_MAX 8
static uint64_t rv_pf_key[RV_PF_MAX];
static int rv_pf_n, rv_pf_on;
static uint64_t rv_pf_sent, rv_pf_used, rv_pf_waited, rv_pf_ahead;

static int zmq_load(const char *path) {
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) return -1;
  z.ctx_new = (void *(*)(void))dlsym(h, "zmq_ctx_new");
  z.socket = (void *(*)(void *, int))dlsym(h, "zmq_socket");
  z.connect = (int (*)(void *, const char *))dlsym(h, "zmq_connect");
  z.setsockopt = (int (*)(void *, int, const void *, size_t))dlsym(h, "zmq_setsockopt");
  z.send = (int (*)(void *, const void *, size_t, int))dlsym(h, "zmq_send");
  z.recv = (int (*)(void *, void *, size_t, int))dlsym(h, "zmq_recv");
  z.getsockopt = (int (*)(void *, int, void *, size_t *))dlsym(h, "zmq_getsockopt");
  return z.ctx_new && z.socket && z.connect && z.setsockopt && z.send && z.recv && z.getsockopt ? 0 : -1;
}

/* Sends [type, payload]; receives [type, payload] into rv_reply. Returns the payload size. */
/* NOTE: the sidecar round trip is the emulator's own work: its polls and timeouts must stay
 * on real time (rv_tw_guard), or the virtual clock could jump across a pending reply. */
static int request_unguarded(uint8_t type, const uint8_t *payload, size_t n, uint8_t *rtype);
static int recv_reply(int flags, uint8_t *rtype);
static int pf_drain(int wait, uint64_t key);

static int request(uint8_t type, const uint8_t *payload, size_t n, uint8_t *rtype) {
  /* The round trip is the emulator's work, not the target's: the clock holds meanwhile. */
  int held = rv_tw_hold(+1) == 0;
  rv_tw_guard++;
  rv_an_push(RV_AN_SIDECAR); /* step anatomy: a cache miss's round trip */
  int r = request_unguarded(type, payload, n, rtype);
  rv_an_pop(RV_AN_SIDECAR);
  rv_tw_guard--;
  if (held) rv_tw_hold(-1);
  return r;
}

/* Opens this process's socket to the sidecar at ep. Returns 0, or -1. */
static int sidecar_connect(const char *ep) {
  rv_tw_guard++; /* libzmq's I/O thread inherits nothing, but its creation polls must be real */
  void *ctx = z.ctx_new();
  void *sock = ctx ? z.socket(ctx, ZMQ_DEALER) : NULL;
  rv_tw_guard--;
  if (!sock) return -1;
  int timeout = 30000, linger = 0;
  z.setsockopt(sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
  z.setsockopt(sock, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
  z.setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
  if (z.connect(sock, ep)) return -1;
  snprintf(rv_sock_ep, sizeof rv_sock_ep, "%s", ep);
  rv_sock = sock;
  rv_sock_pid = getpid();
  rv_pf_n = 0; /* a forked child's new socket owes it no replies */
  return 0;
}

static int request_unguarded(uint8_t type, const uint8_t *payload, size_t n, uint8_t *rtype) {
  /* A forked child (vLLM's engine core under an offline LLM, multiprocessing workers) inherits
   * the parent's socket but not its context's I/O thread: the socket is dead there, and using
   * it lost the predictor for the whole child. The child opens its own (the parent's is left
   * alone: closing it would touch the parent's context). */
  if (RV_UNLIKELY(rv_sock_pid != getpid()) && sidecar_connect(rv_sock_ep)) return -1;
  if (rv_pf_n && pf_drain(1, 0) < 0) return -1; /* their replies come first */
  if (z.send(rv_sock, &type, 1, ZMQ_SNDMORE) < 0 || z.send(rv_sock, payload, n, 0) < 0) return -1;
  return recv_reply(0, rtype);
}

/* Receives one reply [type, payload] into rv_reply (flags: 0 or ZMQ_DONTWAIT). Returns the
 * payload size, or -1 (errno EAGAIN: none there yet). */
static int recv_reply(int flags, uint8_t *rtype) {
  uint8_t t;
  if (z.recv(rv_sock, &t, 1, flags) != 1) return -1;
  int more = 0;
  size_t ml = sizeof more;
  z.getsockopt(rv_sock, ZMQ_RCVMORE, &more, &ml);
  if (!more) { errno = EPROTO; return -1; }
  int r = z.recv(rv_sock, rv_reply, sizeof rv_reply, 0); /* the second frame is there with the first */
  *rtype = t;
  if (r > (int)sizeof rv_reply) { errno = EMSGSIZE; return -1; }
  return r;
}

/* Finds the first float/int after the "us" key's array header in a reply. */
static int parse_us(const uint8_t *p, int n, double *us) {
  for (int i = 0; i + 3 < n; i++) {
    if (p[i] == 0xa2 && p[i + 1] == 'u' && p[i + 2] == 's') {
      int j = i + 3;
      if (j < n && (p[j] & 0xf0) == 0x90) j++;
      else if (j + 2 < n && p[j] == 0xdc) j += 3;
      else return -1;
      if (j + 8 < n && p[j] == 0xcb) {
        uint64_t b = 0;
        for (int k = 0; k < 8; k++) b = (b << 8) | p[j + 1 + k];
        memcpy(us, &b, sizeof *us);
        return 0;
      }
      if (j + 4 < n && p[j] == 0xca) {
        uint32_t b = 0;
        for (int k = 0; k < 4; k++) b = (b << 8) | p[j + 1 + k];
        float f;
        memcpy(&f, &b, sizeof f);
        *us = f;
        return 0;
      }
      if (j < n && p[j] < 0x80) { *us = p[j]; return 0; }
      return -1;
    }
  }
  return -1;
}

/* A PREDICT payload of one descriptor: {"ops": [d]}. */
static void predict_payload(rv_mp *req, const rv_mp *d) {
  rv_mp_map(req, 1);
  rv_mp_str(req, "ops");
  rv_mp_array(req, 1);
  rv_mp_bytes(req, d->buf, d->n);
}

/* Reads the prefetches' replies into the cache, oldest first: with wait, all of them up to the
 * one of key (0: all; the caller holds the clock and guards its waits), else those already
 * there. 0, or -1 when the sidecar failed (the socket's replies are out of step from then on:
 * it is given up). */
static int pf_drain(int wait, uint64_t key) {
  while (rv_pf_n) {
    uint8_t t;
    double us;
    int r = recv_reply(wait ? 0 : ZMQ_DONTWAIT, &t);
    if (r < 0 && !wait && errno == EAGAIN) return 0;
    if (r < 0) {
      rv_pf_n = 0;
      return -1;
    }
    uint64_t got = rv_pf_key[0];
    if (t == 0x02 && parse_us(rv_reply, r, &us) == 0 && us >= 0) cache_put(got, (uint64_t)(us * 1000.0 + 0.5));
    memmove(rv_pf_key, rv_pf_key + 1, (size_t)(rv_pf_n - 1) * sizeof rv_pf_key[0]);
    rv_pf_n--;
    if (wait && key && got == key) return 0;
  }
  return 0;
}

static int pf_pending(uint64_t key) {
  for (int i = 0; i < rv_pf_n; i++)
    if (rv_pf_key[i] == key) return 1;
  return 0;
}

/* Sends one descriptor's PREDICT without waiting for its reply, unless it is cached or sent.
 * 1 if sent. */
static int pf_send(const rv_mp *d) {
  uint64_t key = fnv(d->buf, d->n);
  if ((rv_cache_cap && cache_find(key)->key == key) || pf_pending(key)) return 0;
  if (rv_pf_n == RV_PF_MAX && pf_drain(0, 0) < 0) goto failed;
  if (rv_pf_n == RV_PF_MAX) return 0;
  uint8_t reqbuf[RV_DESC_MAX];
  rv_mp req = RV_MP(reqbuf);
  predict_payload(&req, d);
  uint8_t type = 0x02;
  if (z.send(rv_sock, &type, 1, ZMQ_SNDMORE) < 0 || z.send(rv_sock, req.buf, req.n, 0) < 0) goto failed;
  rv_pf_key[rv_pf_n++] = key;
  rv_pf_sent++;
  return 1;
failed:
  rv_log(RV_LOG_ERROR, "the prediction sidecar stopped answering; using the roofline from now on");
  rv_sidecar_ok = 0;
  return 0;
}

/* The step's attention descriptors, asked for ahead (rv_set_step; rv_lock held). */
static void rv_prefetch_step(void) {
  const rv_step *s = &rv_cur_step;
  if (!rv_pf_on || !rv_sidecar_ok || !rv_model_info.set || s->num_reqs <= 0 || rv_model_info.mla_kv_lora_rank > 0 ||
      rv_sock_pid != getpid())
    return;
  rv_tw_guard++; /* the sends and libzmq's mailbox polls are the emulator's, on real time */
  if (rv_pf_n && pf_drain(0, 0) < 0) {
    rv_log(RV_LOG_ERROR, "the prediction sidecar stopped answering; using the roofline from now on");
    rv_sidecar_ok = 0;
  }
  for (int prefill = 1; prefill >= 0 && rv_sidecar_ok; prefill--) {
    if (!(prefill ? s->num_prefill : s->num_decode)) continue;
    uint8_t dbuf[RV_DESC_MAX];
    rv_mp d = RV_MP(dbuf);
    describe_attention(&d, prefill);
    pf_send(&d);
  }
  /* A decode-only step is most often followed by the same requests one token further on
   * (no request joined, none finished): that step's attention is asked for too, a whole step
   * ahead. When the batch changes, the step asks for its own, as above. */
  if (rv_sidecar_ok && s->num_prefill == 0 && s->num_decode > 0) {
    rv_step next = *s;
    next.decode_kv_sum += s->num_decode;
    next.decode_kv_max += 1;
    uint8_t dbuf[RV_DESC_MAX];
    rv_mp d = RV_MP(dbuf);
    describe_attention_of(&d, 0, &next);
    if (pf_send(&d)) rv_pf_ahead++;
  }
  rv_tw_guard--;
}

/* A miss whose descriptor was prefetched: its reply is read (waiting for it, the clock held,
 * only if it is not there yet). 1 if it is cached now. */
static int pf_take(uint64_t key) {
  if (!pf_pending(key)) return 0;
  rv_tw_guard++;
  int r = pf_drain(0, 0);
  if (r == 0 && pf_pending(key)) {
    rv_pf_waited++;
    int held = rv_tw_hold(+1) == 0;
    rv_an_push(RV_AN_SIDECAR);
    r = pf_drain(1, key);
    rv_an_pop(RV_AN_SIDECAR);
    if (held) rv_tw_hold(-1);
  }
  rv_tw_guard--;
  if (r < 0) {
    rv_log(RV_LOG_ERROR, "the prediction sidecar stopped answering; using the roofline from now on");
    rv_sidecar_ok = 0;
    return 0;
  }
  rv_slot *s = rv_cache_cap ? cache_find(key) : NULL;
  if (!s || s->key != key) return 0;
  rv_pf_used++;
  return 1;
}

/* Looks one descriptor up in the cache, asking the sidecar on a miss. 0 if no answer. */
static uint64_t lookup(const rv_mp *d, const rv_op *op, const rv_gpu_spec *gpu) {
  uint64_t key = fnv(d->buf, d->n);
  if (rv_cache_cap) {
    rv_slot *s = cache_find(key);
    if (s->key == key) { rv_hits++; return s->ns; }
  }
  if (rv_pf_n && pf_take(key)) { rv_misses++; return cache_find(key)->ns; } /* a miss answered ahead */
  rv_misses++;
  uint64_t ns = 0;
  if (rv_sidecar_ok) {
    uint8_t reqbuf[RV_DESC_MAX];
    rv_mp req = RV_MP(reqbuf);
    predict_payload(&req, d);
    uint8_t t;
    double us;
    int r = request(0x02, req.buf, req.n, &t);
    if (r > 0 && t == 0x02 && parse_us(rv_reply, r, &us) == 0 && us >= 0) {
      ns = (uint64_t)(us * 1000.0 + 0.5);
    } else {
      rv_errors++;
      if (r < 0) {
        rv_log(RV_LOG_ERROR, "the prediction sidecar stopped answering; using the roofline from now on");
        rv_sidecar_ok = 0;
      }
    }
  }
  if (!ns) ns = rv_roofline_ns(op, gpu);
  cache_put(key, ns);
  return ns;
}

static uint64_t sidecar_ns(const rv_op *op, const rv_gpu_spec *gpu) {
  uint8_t dbuf[RV_DESC_MAX];
  rv_mp d = RV_MP(dbuf);
  int mapped;
  if (op->kind == RV_OP_KERNEL) rv_kernel_family((rv_kernel *)op->u.kernel.k);
  if (!describe(op, &d, &mapped)) return account(op, rv_roofline_ns(op, gpu), 0);
  uint64_t ns = lookup(&d, op, gpu);
  uint8_t decbuf[RV_DESC_MAX];
  rv_mp dec = RV_MP(decbuf);
  if (describe_decode_part(op, &dec)) ns += lookup(&dec, op, gpu);
  return account(op, ns, mapped);
}

static const rv_duration_source rv_sidecar_source = {"sidecar", sidecar_ns};

/* Connects to REVATI_SIDECAR and checks the handshake. Returns the source, or NULL. */
const rv_duration_source *rv_sidecar_init(void) {
  const char *ep = getenv("REVATI_SIDECAR"), *lib = getenv("REVATI_ZMQ_LIB");
  if (!ep || !*ep) return NULL;
  if (!lib || zmq_load(lib)) {
    rv_log(RV_LOG_ERROR, "REVATI_SIDECAR is set but libzmq (REVATI_ZMQ_LIB=%s) cannot be loaded", lib ? lib : "");
    return NULL;
  }
  if (sidecar_connect(ep)) return NULL;
  uint8_t hellobuf[RV_DESC_MAX];
  rv_mp hello = RV_MP(hellobuf);
  rv_mp_map(&hello, 2);
  rv_mp_kv_int(&hello, "version", 1);
  rv_mp_kv_str(&hello, "gpu", rv_gpu->key);
  uint8_t t;
  int r = request(0x01, hello.buf, hello.n, &t);
  if (r < 0 || t != 0x01) {
    rv_log(RV_LOG_ERROR, "no handshake from the prediction sidecar at %s; using the roofline", ep);
    return NULL;
  }
  rv_sidecar_ok = 1;
  const char *pf = getenv("REVATI_SIDECAR_PREFETCH");
  rv_pf_on = !(pf && strcmp(pf, "0") == 0);
  return &rv_sidecar_source;
}

void rv_sidecar_stats(uint64_t *hits, uint64_t *misses, uint64_t *unmapped, uint64_t *errors,
                      uint64_t *mapped_ns, uint64_t *unmapped_ns) {
  *hits = rv_hits; *misses = rv_misses; *unmapped = rv_unmapped; *errors = rv_errors;
  *mapped_ns = rv_mapped_ns; *unmapped_ns = rv_unmapped_ns;
}

void rv_sidecar_prefetch_stats(uint64_t *sent, uint64_t *ahead, uint64_t *used, uint64_t *waited) {
  *sent = rv_pf_sent; *ahead = rv_pf_ahead; *used = rv_pf_used; *waited = rv_pf_waited;
}
