/* The roofline duration source: FLOPs and bytes of each op against the part's datasheet peaks,
 * with achievable-fraction factors and a launch floor. It needs no model, so it is also the
 * fallback of the sidecar source for ops the predictor does not answer (predictor_client.c). */
#include "shim.h"

/* Achievable fractions of the datasheet peaks, and the floor of any GPU op. */
#define RV_COMPUTE_EFF 0.70
#define RV_MEM_EFF 0.80
#define RV_LINK_EFF 0.80
#define RV_KERNEL_FLOOR_NS 2500.0
#define RV_COPY_LATENCY_NS 5000.0
#define RV_COLL_LATENCY_NS 10000.0

static double dtype_bytes(int dt) {
  switch (dt) {
    case RV_DT_F64: return 8;
    case RV_DT_F32: case RV_DT_I32: case RV_DT_TF32: return 4;
    case RV_DT_F16: case RV_DT_BF16: return 2;
    case RV_DT_F8E4M3: case RV_DT_F8E5M2: case RV_DT_I8: return 1;
    default: return 2;
  }
}

static double peak_flops(int dt, int compute, const rv_gpu_spec *g) {
  double tf;
  switch (dt) {
    case RV_DT_F8E4M3: case RV_DT_F8E5M2: case RV_DT_I8:
      tf = g->peak_tflops_fp8 > 0 ? g->peak_tflops_fp8 : g->peak_tflops_bf16; break;
    case RV_DT_F32: tf = compute == RV_DT_TF32 ? g->peak_tflops_tf32 : g->peak_tflops_fp32; break;
    case RV_DT_F64: tf = g->peak_tflops_fp32 / 2; break;
    default: tf = g->peak_tflops_bf16;
  }
  return tf * 1e12;
}

static double max3(double a, double b, double c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

uint64_t rv_roofline_ns(const rv_op *op, const rv_gpu_spec *g) {
  double bw = g->mem_bw_gbps * 1e9 * RV_MEM_EFF; /* bytes/s */
  double t;
  switch (op->kind) {
    case RV_OP_GEMM: {
      double m = (double)op->u.gemm.m, n = (double)op->u.gemm.n, k = (double)op->u.gemm.k;
      double b = op->u.gemm.batch > 0 ? (double)op->u.gemm.batch : 1;
      double flops = 2 * m * n * k * b;
      double bytes = b * ((m * k + k * n) * dtype_bytes(op->u.gemm.dtype_a) + m * n * dtype_bytes(op->u.gemm.dtype_c));
      t = max3(flops / (peak_flops(op->u.gemm.dtype_a, op->u.gemm.compute, g) * RV_COMPUTE_EFF) * 1e9,
               bytes / bw * 1e9, RV_KERNEL_FLOOR_NS);
      break;
    }
    case RV_OP_MEMCPY: {
      double bytes = (double)op->u.copy.bytes;
      double pcie = (g->pcie_gen >= 5 ? 50e9 : 25e9);
      switch (op->u.copy.dir) {
        case RV_H2D: case RV_D2H: t = RV_COPY_LATENCY_NS + bytes / pcie * 1e9; break;
        case RV_D2D: t = RV_KERNEL_FLOOR_NS + 2 * bytes / bw * 1e9; break;
        default: t = 1000 + bytes / 10e9 * 1e9;
      }
      break;
    }
    case RV_OP_MEMSET:
      t = RV_KERNEL_FLOOR_NS + (double)op->u.memset.bytes / bw * 1e9;
      break;
    case RV_OP_COLLECTIVE: {
      double n = op->u.coll.nranks > 1 ? op->u.coll.nranks : 1;
      double link = g->interconnect_gbps * 1e9 * RV_LINK_EFF;
      double bytes = (double)op->u.coll.bytes, moved;
      switch (op->u.coll.coll) {
        case RV_COLL_ALL_REDUCE: moved = 2 * (n - 1) / n * bytes; break;
        case RV_COLL_ALL_GATHER: moved = (n - 1) * bytes; break;          /* bytes = per-rank send */
        case RV_COLL_REDUCE_SCATTER: moved = (n - 1) / n * bytes; break;  /* bytes = full input */
        case RV_COLL_ALL_TO_ALL: moved = (n - 1) / n * bytes; break;
        default: moved = bytes;
      }
      t = (n > 1 ? RV_COLL_LATENCY_NS : RV_KERNEL_FLOOR_NS) + moved / link * 1e9;
      break;
    }
    default: {
      /* A generic kernel: no semantic information yet; assume every thread streams 16 bytes. */
      double threads = (double)op->u.kernel.grid[0] * op->u.kernel.grid[1] * op->u.kernel.grid[2] *
                       op->u.kernel.block[0] * op->u.kernel.block[1] * op->u.kernel.block[2];
      t = RV_KERNEL_FLOOR_NS + threads * 16.0 / bw * 1e9;
    }
  }
  return (uint64_t)t;
}

const rv_duration_source rv_roofline_source = {"roofline", rv_roofline_ns};
