/* The shim's one msgpack writer (msgpack.h): the bytes of each form it writes, what it drops
 * when the buffer is full, and the integer reader reading back every width. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "msgpack.h"

static int fails;

static void expect(const char *what, const rv_mp *w, const uint8_t *want, size_t n) {
  if (w->n != n || memcmp(w->buf, want, n)) {
    printf("FAIL %s: got %zu bytes:", what, w->n);
    for (size_t i = 0; i < w->n; i++) printf(" %02x", w->buf[i]);
    printf("\n");
    fails++;
  }
}

int main(void) {
  uint8_t buf[64];
  rv_mp w = RV_MP(buf);

  rv_mp_int(&w, 0); rv_mp_int(&w, 127);
  expect("fixints", &w, (const uint8_t[]){0x00, 0x7f}, 2);
  w.n = 0; rv_mp_int(&w, 128);
  expect("128 as int64", &w, (const uint8_t[]){0xd3, 0, 0, 0, 0, 0, 0, 0, 0x80}, 9);
  w.n = 0; rv_mp_int(&w, -1);
  expect("-1 as int64", &w, (const uint8_t[]){0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9);

  w.n = 0; rv_mp_array(&w, 15); rv_mp_array(&w, 16); rv_mp_array(&w, 65536);
  expect("array headers", &w, (const uint8_t[]){0x9f, 0xdc, 0x00, 0x10, 0xdd, 0x00, 0x01, 0x00, 0x00}, 9);
  w.n = 0; rv_mp_map(&w, 2); rv_mp_kv_str(&w, "op", "gemm"); rv_mp_kv_int(&w, "m", 5);
  expect("map", &w, (const uint8_t[]){0x82, 0xa2, 'o', 'p', 0xa4, 'g', 'e', 'm', 'm', 0xa1, 'm', 0x05}, 12);
  char s32[33];
  memset(s32, 'x', 32);
  s32[32] = 0;
  w.n = 0; rv_mp_str(&w, s32);
  if (w.n != 34 || buf[0] != 0xd9 || buf[1] != 32) { printf("FAIL str8 header\n"); fails++; }

  /* A full buffer drops what does not fit, whole values at a time, and never overruns. */
  uint8_t small[10];
  rv_mp t = RV_MP(small);
  rv_mp_int(&t, 1); rv_mp_int(&t, 1000); rv_mp_int(&t, 2);
  if (t.n != 10 || small[0] != 1 || small[1] != 0xd3) { printf("FAIL full buffer: %zu\n", t.n); fails++; }
  rv_mp_int(&t, 3000);
  if (t.n != 10) { printf("FAIL past the end: %zu\n", t.n); fails++; }

  /* The reader reads every width back. */
  static const struct { uint8_t b[9]; size_t n; int64_t v; } cases[] = {
      {{0x05}, 1, 5}, {{0xff}, 1, -1}, {{0xcc, 200}, 2, 200}, {{0xcd, 1, 0}, 3, 256},
      {{0xd0, 0x80}, 2, -128}, {{0xd1, 0xff, 0x00}, 3, -256}, {{0xce, 0, 1, 0, 0}, 5, 65536},
      {{0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}, 9, -2},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int64_t v = 0;
    size_t used = rv_mp_read_int(cases[i].b, cases[i].n, &v);
    if (used != cases[i].n || v != cases[i].v) { printf("FAIL read %zu: %zu %lld\n", i, used, (long long)v); fails++; }
  }
  int64_t v;
  if (rv_mp_read_int((const uint8_t[]){0xa1, 'x'}, 2, &v) != 0) { printf("FAIL a str read as an int\n"); fails++; }
  if (rv_mp_read_int((const uint8_t[]){0xcd, 1}, 2, &v) != 0) { printf("FAIL a cut int\n"); fails++; }

  printf(fails ? "msgpack_writer: %d failures\n" : "msgpack_writer: ok\n", fails);
  return fails != 0;
}
