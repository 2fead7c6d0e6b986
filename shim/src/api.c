/* The shim's functions for Python (revati_api.h): thin doors into the parts that do the work.
 * Nothing else of the shim calls them. */
#define _GNU_SOURCE
#include "revati_api.h"

#include "shim.h"
#include "timewarp.h"

void revati_flush(void) { rv_flush(); }

int revati_clock_freeze(int delta) { return rv_tw_freeze(delta); }

const char *revati_anatomy_fields(void) { return rv_an_fields(); }

int revati_thread_anatomy(int64_t *out, int n) { return rv_an_read(out, n); }

/* Entering or leaving a Python-side state (the model runner, the scheduler, the engine's input
 * queue) is the thread doing something else than yield-spinning: that ends a spin. */
void revati_anatomy_push(int state) {
  rv_tw_unspin();
  rv_an_push(state);
}

void revati_anatomy_pop(int state) {
  rv_tw_unspin();
  rv_an_pop(state);
}

void revati_set_model(int num_heads, int num_kv_heads, int head_dim, int hidden, int intermediate) {
  rv_set_model(num_heads, num_kv_heads, head_dim, hidden, intermediate);
}

void revati_set_moe(int experts_local, int experts_total, int topk, int intermediate, int weight_bytes) {
  rv_set_moe(experts_local, experts_total, topk, intermediate, weight_bytes);
}

void revati_set_mla(int kv_lora_rank, int rope_dim, int qk_nope_dim, int v_head_dim) {
  rv_set_mla(kv_lora_rank, rope_dim, qk_nope_dim, v_head_dim);
}

void revati_set_step(int64_t num_tokens, int64_t num_reqs, int64_t num_prefill, int64_t num_decode,
                     int64_t prefill_tokens, int64_t prefill_kv_sum, int64_t prefill_kv_max, int64_t prefill_pairs,
                     int64_t decode_kv_sum, int64_t decode_kv_max) {
  rv_set_step(num_tokens, num_reqs, num_prefill, num_decode, prefill_tokens, prefill_kv_sum, prefill_kv_max,
              prefill_pairs, decode_kv_sum, decode_kv_max);
  rv_periodic_flush(); /* once per step at most every second: serving steps sync on events, not streams */
}
