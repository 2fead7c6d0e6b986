/* Kernel families from names (kernels.c, compiled in): the names that once went to the wrong
 * family, each with the family it belongs to. */
#include <stdio.h>
#include <string.h>

#include "../src/kernels.c"

static int fails;

static void expect(const char *name, int fam) {
  int got = rv_classify_kernel(name);
  if (got != fam) {
    printf("FAIL %s: family %d, want %d\n", name, got, fam);
    fails++;
  }
}

int main(void) {
  /* Inductor norms fused into a MoE layer's forward are norms, not MoE kernels */
  expect("triton_red_fused_fused_add_rms_norm_moe_forward_0", RV_FAM_NORM);
  expect("triton_red_fused_fused_add_rms_norm_moe_forward_shared_0", RV_FAM_NORM);
  /* the MoE layer's own kernels */
  expect("fused_moe_kernel", RV_FAM_MOE);
  expect("_ZN4vllm3moe17topkGatingSoftmaxILi8ELi8ELi4ELi16ELi32Ei13__nv_bfloat16EEvPKT5_PKbPfiPT4_PiiiiE", RV_FAM_MOE);
  expect("_ZN4vllm3moe18moe_sum_vec_kernelI13__nv_bfloat16Li2EEEvPT_PKS3_i", RV_FAM_MOE);
  expect("void cutlass_3x_group_gemm<cutlass::float_e4m3_t>", RV_FAM_MOE);
  expect("finalizeMoeRoutingKernel", RV_FAM_MOE);
  /* dense GEMM kernels stay GEMM kernels; vLLM's Triton decode attention is attention */
  expect("vllm::cutlass_3x_gemm_sm90_fp8", RV_FAM_GEMM_KERNEL);
  expect("_fwd_grouped_kernel_stage1", RV_FAM_ATTENTION);
  expect("_fwd_kernel_stage2", RV_FAM_REDUCE);
  /* SGLang 0.5.23's kernels (a Llama-3.1-8B trace): its KV write, its activation and rotary */
  expect("_ZN6sglang20store_kvcache_kernelILl2048ELl2048ELj128ELb1ElEEvNS_17StoreKVCacheParamsE", RV_FAM_CACHE_WRITE);
  expect("void sglang::act_and_mul_kernel<__nv_bfloat16, (sglang::ActivationKind)0, true>", RV_FAM_ACTIVATION);
  expect("void sglang::fused_rope_kernel<true, 128l, true, __nv_bfloat16>", RV_FAM_ROTARY);
  /* CUTLASS 3.x GEMMs are GEMM ops, their shape read from the Params (mode, M, N, K, L); the
   * names are vLLM 0.32's (a Llama-4-Scout FP8 run's trace) */
  {
    static const char *plain =
        "_ZN7cutlass13device_kernelIN4vllm24cutlass_3x_gemm_sm90_fp8INS_12float_e4m3_tENS_10bfloat16_tENS1_3c3x14"
        "ScaledEpilogueEN4cute5tupleIJNS7_1CILi128EEESA_SA_EEENS8_IJNS9_ILi2EEENS9_ILi1EEESD_EEENS_4gemm44KernelTma"
        "WarpSpecializedPingpongFP8FastAccumENS_8epilogue18TmaWarpSpecializedELb0EE10GemmKernelEEEvNT_6ParamsE";
    static const char *swapped =
        "_ZN7cutlass13device_kernelIN4vllm24cutlass_3x_gemm_sm90_fp8INS_12float_e4m3_tENS_10bfloat16_tENS1_3c3x14"
        "ScaledEpilogueEN4cute5tupleIJNS7_1CILi64EEENS9_ILi16EEENS9_ILi256EEEEEENS8_IJNS9_ILi1EEESE_SE_EEENS_4gemm36"
        "KernelTmaWarpSpecializedFP8FastAccumENS_8epilogue18TmaWarpSpecializedELb1EE10GemmKernelEEEvNT_6ParamsE";
    static const char *grouped =
        "_ZN7cutlass13device_kernelIN55_GLOBAL__N__2dd8d898_22_grouped_mm_c3x_sm90_cu_4fc159ed21cutlass_3x_group_gemm"
        "INS_12float_e4m3_tENS_10bfloat16_tENS_4arch4Sm90EN4vllm3c3x19ScaledEpilogueArrayE";
    struct { int32_t mode, m, n, k, l; char rest[64]; } params = {1, 512, 5120, 8192, 1, {0}};
    void *args[1] = {&params};
    rv_op op;
    rv_kernel a = {.mangled = plain, .family = -1}, b = {.mangled = swapped, .family = -1},
              c = {.mangled = grouped, .family = -1}, d = {.mangled = "triton_poi_fused_0", .family = -1};
    if (!rv_kernel_as_gemm(&a, args, &op) || op.kind != RV_OP_GEMM || op.u.gemm.n != 512 || op.u.gemm.m != 5120 ||
        op.u.gemm.k != 8192 || op.u.gemm.batch != 1 || op.u.gemm.dtype_a != RV_DT_F8E4M3) {
      printf("FAIL cutlass_3x_gemm_sm90_fp8: not read as a 512 x 5120 x 8192 fp8 GEMM\n");
      fails++;
    }
    /* swap_ab, a non-persistent schedule (no mode before the shape): the problem is (out, tokens, in) */
    struct { int32_t m, n, k, l; char rest[64]; } plain_params = {5120, 8, 5120, 1, {0}};
    void *plain_args[1] = {&plain_params};
    if (!rv_kernel_as_gemm(&b, plain_args, &op) || op.u.gemm.n != 8 || op.u.gemm.m != 5120 || op.u.gemm.k != 5120) {
      printf("FAIL cutlass_3x_gemm_sm90_fp8 swap_ab: tokens %lld out %lld, want 8 and 5120\n",
             (long long)op.u.gemm.n, (long long)op.u.gemm.m);
      fails++;
    }
    if (rv_kernel_as_gemm(&c, args, &op) || rv_kernel_as_gemm(&d, args, &op) || rv_kernel_as_gemm(&a, NULL, &op)) {
      printf("FAIL a grouped GEMM, a Triton kernel or a launch without parameters read as a GEMM\n");
      fails++;
    }
    params.mode = 77; /* not a CUTLASS Params: left to the launch geometry */
    if (rv_kernel_as_gemm(&a, args, &op)) {
      printf("FAIL a Params without a valid mode read as a GEMM\n");
      fails++;
    }
  }
  /* MLA: FlashAttention-3's latent decode (V head dim 512) vs its prefill on up-projected heads
   * (192 / 128), from a DeepSeek-V2-Lite run on vLLM's FLASH_ATTN_MLA backend */
  {
    static const char *fa3_mla_decode =
        "_ZN7cutlass13device_kernelIN5flash20enable_sm90_or_laterINS1_16FlashAttnFwdSm90INS1_25CollectiveMainloopFwdSm90"
        "ILi2EN4cute5tupleIJNS5_1CILi1EEES8_S8_EEENS6_IJNS7_ILi64EEESA_SA_EEELi512ENS_10bfloat16_tEfNS_4arch4Sm90ELb0ELb0E"
        "Lb0ELb1ELb1ELb0ELb1ELb0ELb0ELb0ELb1ELb1ELb0ESC_Li1EEENS1_21CollectiveEpilogueFwdINS6_IJSA_NS7_ILi512EEESA_EEES9_SC_"
        "SE_Li256ELb1ELb1ELb1ELb0ELi1EEENS1_36VarlenDynamicPersistentTileSchedulerILi64ELi64ELi256ELi128ELb1ELb1ELb1ELb0ELb0E"
        "Lb1EEEEEEEEEvNT_6ParamsE";
    static const char *fa3_mla_prefill =
        "_ZN7cutlass13device_kernelIN5flash20enable_sm90_or_laterINS1_16FlashAttnFwdSm90INS1_25CollectiveMainloopFwdSm90"
        "ILi2EN4cute5tupleIJNS5_1CILi1EEES8_S8_EEENS6_IJNS7_ILi128EEESA_NS7_ILi192EEEEEELi128ENS_10bfloat16_tEfNS_4arch4Sm90E"
        "Lb1ELb0ELb0ELb1ELb0ELb0ELb0ELb0ELb1ELb1ELb1ELb1ELb0ESD_Li1EEENS1_21CollectiveEpilogueFwdINS6_IJSA_SA_SA_EEES9_SD_SF_"
        "Li256ELb1ELb1ELb1ELb0ELi1EEENS1_36VarlenDynamicPersistentTileSchedulerILi128ELi128ELi256ELi128ELb1ELb1ELb1ELb1ELb0E"
        "Lb1EEEEEEEEEvNT_6ParamsE";
    if (!rv_mla_decode_kernel(fa3_mla_decode, 512) || rv_mla_decode_kernel(fa3_mla_prefill, 512) ||
        !rv_mla_decode_kernel("flash_mla_fwd_kernel", 512) || !rv_mla_decode_kernel("_fwd_grouped_kernel_stage1", 512)) {
      printf("FAIL MLA decode vs prefill kernels\n");
      fails++;
    }
  }
  if (fails) return 1;
  printf("kernel_families: ok\n");
  return 0;
}
