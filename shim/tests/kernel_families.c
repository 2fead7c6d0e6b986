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
  if (fails) return 1;
  printf("kernel_families: ok\n");
  return 0;
}
