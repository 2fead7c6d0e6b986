/* The functions that Python calls through ctypes, all of them: the shim's (librevati_shim.so,
 * api.c) and the Timekeeper's /proc scanner's (librevati_tk.so, shim/tk/tk_scan.c).
 *
 * revati/launch/shim_api.py binds each one with the argument and result types written here;
 * tests/shim/test_shim_api.py checks that the two agree and that the libraries export them.
 * Keep to C scalar types and pointers to them (ctypes has no view of structs declared here).
 */
#ifndef REVATI_API_H
#define REVATI_API_H

#include <stdint.h>

#define RV_API __attribute__((visibility("default")))

/* ------------------------------------------------- librevati_shim.so (the preloaded shim) */

/* Writes the stats and flushes the trace now. The vLLM plugin calls it at process exit, since
 * multiprocessing children end in _exit() and never reach the shim's destructor. */
RV_API void revati_flush(void);

/* Stops (+1) or restarts (-1) the deployment's virtual clock around one-off work that a
 * warmed-up server would not do, such as a Triton kernel's first-use JIT compile. Nests per
 * process; the Timekeeper undoes what a process that exits left frozen. Returns 0, or -1
 * without a Timekeeper. */
RV_API int revati_clock_freeze(int delta);

/* Step anatomy (timewarp.h). The names of revati_thread_anatomy's values: the header fields
 * before ';', then the states, each as 4 values (virtual ns, GPU-busy ns within them, real
 * ns, entries). */
RV_API const char *revati_anatomy_fields(void);
/* The calling thread's cumulative counters, in the order of revati_anatomy_fields. Writes at
 * most n values to out and returns how many, or -1 without the time warp. */
RV_API int revati_thread_anatomy(int64_t *out, int n);
/* Enters / leaves a Python-side state (an index into revati_anatomy_fields' states) on the
 * calling thread. */
RV_API void revati_anatomy_push(int state);
RV_API void revati_anatomy_pop(int state);

/* The vLLM semantic layer (revati/vllm_plugin/steps.py): the model's attention and MLP shape,
 * per GPU (after tensor parallel), once per model runner ... */
RV_API void revati_set_model(int num_heads, int num_kv_heads, int head_dim, int hidden, int intermediate);
/* ... its routed experts (MoE models only), per GPU: the experts this GPU holds, the model's
 * routed experts in all, the experts each token is sent to, each expert's intermediate size on
 * this GPU, and the bytes of one expert weight (2 for bf16/fp16, 1 for fp8) ... */
RV_API void revati_set_moe(int experts_local, int experts_total, int topk, int intermediate, int weight_bytes);
/* ... its multi-head latent attention (DeepSeek-style MLA only): the latent's size, the rotary
 * key's, and the up-projected heads' QK (non-rotary part) and V head dims ... */
RV_API void revati_set_mla(int kv_lora_rank, int rope_dim, int qk_nope_dim, int v_head_dim);
/* ... and each step's batch composition, from which kernels launched in the step are
 * described for the predictor. */
RV_API void revati_set_step(int64_t num_tokens, int64_t num_reqs, int64_t num_prefill, int64_t num_decode,
                            int64_t prefill_tokens, int64_t prefill_kv_sum, int64_t prefill_kv_max,
                            int64_t prefill_pairs, int64_t decode_kv_sum, int64_t decode_kv_max);

/* -------------------------------------------- librevati_tk.so (the Timekeeper's scanner) */

/* Reads the scheduler state and the run count of every thread of the given processes and
 * stops at the first thread that is not idle. out gets 3 int64 per thread: pid, tid, runs.
 * Returns the thread count, -1 when a thread is runnable (or in D/T state), or -2 when cap
 * is too small. Not thread-safe: one caller. */
RV_API int64_t rv_tk_scan(const int32_t *pids, int npids, int64_t *out, int64_t cap);
/* The quiescence test in one call: -1 when a thread is not idle (nothing is recorded), else
 * compares every thread's run count with the last idle scan and records this one: 0 when no
 * thread outside exempt (the WAITING actors) got a CPU in between, 1 when one did or a thread
 * is new. */
RV_API int rv_tk_quiet(const int32_t *pids, int npids, const int32_t *exempt, int nexempt);
/* What rv_tk_quiet did so far (out[4]): its calls, those decided by a counts-only sample, the
 * busy ones decided by the ring of recently busy threads, and the thread states read. */
RV_API void rv_tk_counters(int64_t *out);

#endif
