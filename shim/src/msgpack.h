/* The shim's one msgpack writer (and integer reader), for both of its wire formats: the
 * prediction sidecar's op descriptors (predictor_client.c) and the Timekeeper's messages
 * (timewarp.c). Only the types they use: maps, arrays, short strings and integers.
 *
 * Header-only: the descriptor of every op is written on the launch path. A writer fills a
 * caller's buffer and drops what would not fit (a descriptor longer than its buffer is cut,
 * never overrun); callers size the buffer for what they write. */
#ifndef REVATI_MSGPACK_H
#define REVATI_MSGPACK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct rv_mp {
  uint8_t *buf;
  size_t cap, n;
} rv_mp;

#define RV_MP(array) ((rv_mp){(array), sizeof(array), 0})

/* rv_mp_map: n < 16. rv_mp_array: any n. rv_mp_str: shorter than 256 bytes. rv_mp_int: a
 * positive fixint below 128, else an int64 (so at most 9 bytes a value). rv_mp_read_int reads
 * one integer of any width and returns the bytes consumed, 0 on a non-integer. */
static inline void rv_mp_byte(rv_mp *w, uint8_t b) {
  if (w->n < w->cap) w->buf[w->n++] = b;
}

static inline void rv_mp_bytes(rv_mp *w, const void *p, size_t n) {
  if (w->n + n <= w->cap) {
    memcpy(w->buf + w->n, p, n);
    w->n += n;
  }
}

static inline void rv_mp_map(rv_mp *w, int n) { rv_mp_byte(w, (uint8_t)(0x80 | n)); }

static inline void rv_mp_array(rv_mp *w, size_t n) {
  if (n < 16) {
    rv_mp_byte(w, (uint8_t)(0x90 | n));
  } else if (n < 65536) {
    uint8_t h[3] = {0xdc, (uint8_t)(n >> 8), (uint8_t)n};
    rv_mp_bytes(w, h, sizeof h);
  } else {
    uint8_t h[5] = {0xdd, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    rv_mp_bytes(w, h, sizeof h);
  }
}

static inline void rv_mp_str(rv_mp *w, const char *s) {
  size_t n = strlen(s);
  if (n < 32) rv_mp_byte(w, (uint8_t)(0xa0 | n));
  else { rv_mp_byte(w, 0xd9); rv_mp_byte(w, (uint8_t)n); }
  rv_mp_bytes(w, s, n);
}

static inline void rv_mp_int(rv_mp *w, int64_t v) {
  if (v >= 0 && v < 128) { rv_mp_byte(w, (uint8_t)v); return; }
  uint8_t b[9] = {0xd3};
  for (int i = 0; i < 8; i++) b[1 + i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
  rv_mp_bytes(w, b, 9);
}

static inline size_t rv_mp_read_int(const uint8_t *p, size_t len, int64_t *v) {
  if (len < 1) return 0;
  uint8_t t = p[0];
  if (t <= 0x7f) { *v = t; return 1; }
  if (t >= 0xe0) { *v = (int8_t)t; return 1; }
  static const uint8_t widths[] = {1, 2, 4, 8};
  int signed_ = t >= 0xd0 && t <= 0xd3, unsigned_ = t >= 0xcc && t <= 0xcf;
  if (!signed_ && !unsigned_) return 0;
  size_t w = widths[t - (signed_ ? 0xd0 : 0xcc)];
  if (len < 1 + w) return 0;
  uint64_t x = 0;
  for (size_t i = 0; i < w; i++) x = (x << 8) | p[1 + i];
  if (signed_ && w < 8 && (x >> (8 * w - 1))) x |= ~0ULL << (8 * w);
  *v = (int64_t)x;
  return 1 + w;
}

static inline void rv_mp_kv_str(rv_mp *w, const char *k, const char *v) { rv_mp_str(w, k); rv_mp_str(w, v); }
static inline void rv_mp_kv_int(rv_mp *w, const char *k, int64_t v) { rv_mp_str(w, k); rv_mp_int(w, v); }

#endif
