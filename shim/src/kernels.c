/* The kernel registry: kernels registered by nvcc host code (__cudaRegisterFunction), loaded
 * from modules (cuModuleGetFunction, Triton) or created by cuLibrary calls, with their
 * demangled names and their families (classified from the name on first launch).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

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
      {"copy_blocks", RV_FAM_CACHE_WRITE},
      {"store_kvcache", RV_FAM_CACHE_WRITE}, /* SGLang's KV write (sglang::store_kvcache_kernel) */
      /* the norms first: Inductor names a norm fused into a MoE layer's forward
       * ..._rms_norm_moe_forward_0, and it is a norm */
      {"rms_norm", RV_FAM_NORM},                 {"layer_norm", RV_FAM_NORM},
      {"rmsnorm", RV_FAM_NORM},                  {"RMSNorm", RV_FAM_NORM},
      {"moe", RV_FAM_MOE},                       {"Moe", RV_FAM_MOE},
      {"expert", RV_FAM_MOE},                    {"topk_softmax", RV_FAM_MOE},
      {"group_gemm", RV_FAM_MOE},                /* CUTLASS grouped expert GEMMs (FP8 MoE) */
      /* FlashAttention's helpers around its main kernel: the split-KV scheduler's block count
       * (FA3 prepare_varlen_num_blocks) and the combine of split-KV partial outputs (FA3
       * FlashAttnFwdCombine, FA2 flash_fwd_splitkv_combine_kernel). They are not the attention
       * op: described by their launch geometry, or each would be charged the whole op (the
       * main kernel carries it, as in the measured tables, which time the whole call). */
      {"prepare_varlen", RV_FAM_REDUCE},         {"Combine", RV_FAM_REDUCE},
      /* vLLM's Triton decode attention (TRITON_MLA and TRITON_ATTN's split-KV decode): stage 1
       * is the attention, stage 2 the reduction of its splits. */
      {"_fwd_kernel_stage2", RV_FAM_REDUCE},     {"_fwd_grouped_kernel_stage1", RV_FAM_ATTENTION},
      {"_fwd_kernel_stage1", RV_FAM_ATTENTION},  {"flash_mla", RV_FAM_ATTENTION},
      {"mla_decode", RV_FAM_ATTENTION},
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

int rv_kernel_family(rv_kernel *k) {
  if (RV_UNLIKELY(k->family < 0)) {
    int fam = rv_classify_kernel(k->mangled);
    if (fam == RV_FAM_UNKNOWN && k->from_triton) fam = RV_FAM_TRITON;
    k->family = fam;
  }
  return k->family;
}

/* CUTLASS 3.x GEMMs (vLLM's cutlass_3x_gemm_sm90_fp8 scaled_mm and the like): their only kernel
 * parameter is the kernel's Params struct, which begins with the ProblemShape, a
 * cute::tuple<int, int, int, int> (M, N, K, L): the GEMM's shape, row-major (M tokens, N out
 * features, K in), which the launch geometry (tiles) does not give. The persistent schedules
 * (Pingpong, Cooperative: cutlass/gemm/kernel/sm90_gemm_tma_warpspecialized_{pingpong,cooperative}
 * .hpp) put a `GemmUniversalMode mode` (an int) before it; vLLM's plain KernelTmaWarpSpecialized
 * kernels do not (seen in their launches: (6144, 1, 4096, 1) at offset 0, against (0, 8192, 6144,
 * 4096, 1) for a Pingpong one). */
static int is_cutlass3_gemm(const char *n) {
  if (!strstr(n, "13device_kernel")) return 0; /* cutlass::device_kernel<Op>(Op::Params) */
  if (strstr(n, "group_gemm") || strstr(n, "Grouped") || strstr(n, "grouped")) return 0; /* MoE: per-group shapes */
  return strstr(n, "cutlass_3x_gemm") || strstr(n, "GemmUniversal") ? 1 : 0;
}

static int cutlass_dtype(const char *n) {
  if (strstr(n, "float_e4m3")) return RV_DT_F8E4M3;
  if (strstr(n, "float_e5m2")) return RV_DT_F8E5M2;
  if (strstr(n, "bfloat16")) return RV_DT_BF16;
  if (strstr(n, "half_t")) return RV_DT_F16;
  if (strstr(n, "int8") || strstr(n, "Li8") || strstr(n, "int8_t")) return RV_DT_I8;
  return RV_DT_BF16;
}

int rv_kernel_as_gemm(rv_kernel *k, void **args, rv_op *op) {
  if (!args || !args[0] || rv_kernel_family(k) != RV_FAM_GEMM_KERNEL || !is_cutlass3_gemm(k->mangled)) return 0;
  int32_t v[5] = {0};
  const char *n = k->mangled;
  if (strstr(n, "Pingpong") || strstr(n, "Cooperative")) {
    memcpy(v, args[0], sizeof v); /* mode, M, N, K, L */
    if (v[0] < 0 || v[0] > 8) return 0;
  } else {
    memcpy(v + 1, args[0], 4 * sizeof(int32_t)); /* M, N, K, L */
  }
  for (int i = 1; i < 4; i++)
    if (v[i] < 1 || v[i] > (1 << 24)) return 0;
  /* K: TMA needs 16-byte rows (a multiple of 8 elements even in bf16); L: a batch count */
  if (v[3] % 8 || v[4] < 1 || v[4] > 65536) return 0;
  /* vLLM's cutlass_3x_gemm_sm90_fp8<..., bool swap_ab>::GemmKernel (its sm90 FP8 dispatch, for
   * few tokens: the 64 x 16 tiles) computes D^T = W X^T: the shape is then (out, tokens, in) */
  int swap = strstr(n, "cutlass_3x_gemm_sm90_fp8") && strstr(n, "Lb1EE10GemmKernel");
  int64_t tokens = swap ? v[2] : v[1], out = swap ? v[1] : v[2];
  memset(op, 0, sizeof *op);
  op->kind = RV_OP_GEMM;
  /* rv_op's GEMM is cuBLAS's column-major m x n (predictor_client.c swaps it back): row-major
   * tokens x out is column-major out x tokens */
  op->u.gemm.m = out;
  op->u.gemm.n = tokens;
  op->u.gemm.k = v[3];
  op->u.gemm.batch = v[4];
  op->u.gemm.dtype_a = (uint8_t)cutlass_dtype(k->mangled);
  op->u.gemm.dtype_c = RV_DT_BF16;
  return 1;
}

/* An MLA model's attention kernel that is the latent decode (its V head dim is the latent rank):
 * FlashMLA, FlashInfer MLA and vLLM's Triton grouped decode by name; FlashAttention-3's MLA mode
 * (vLLM's FLASH_ATTN_MLA backend) by its template arguments: the decode kernel is
 * CollectiveMainloopFwdSm90<..., TileShape<64, 64, 64>, kHeadDimV = 512, ...> ("...ELi512ENS_10
 * bfloat16_t..." for DeepSeek's kv_lora_rank 512), the prefill one on up-projected heads has
 * head dims 192 / 128 (seen in a DeepSeek-V2-Lite run's trace). */
int rv_mla_decode_kernel(const char *n, int kv_lora_rank) {
  if (strstr(n, "mla") || strstr(n, "MLA") || strstr(n, "Mla") || strstr(n, "_fwd_grouped_kernel") ||
      strstr(n, "decode"))
    return 1;
  if (kv_lora_rank > 0 && strstr(n, "FlashAttnFwd")) {
    char needle[32];
    snprintf(needle, sizeof needle, "ELi%dENS_", kv_lora_rank); /* kHeadDimV, then the element type */
    if (strstr(n, needle)) return 1;
  }
  return 0;
}
