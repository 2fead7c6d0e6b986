/* The shared-memory clock page: one virtual clock for every process of a deployment.
 *
 * The Timekeeper (revati/timekeeper) creates the page as a file (REVATI_CLOCK, normally
 * /dev/shm/revati-<id>) and is its only writer; every emulated process maps it read-only.
 *
 *   V = (R - r0_ns) * 1e6 / dilation_ppm + offset_ns      (virtual CLOCK_MONOTONIC, ns)
 *
 * where R is the real CLOCK_MONOTONIC. Only the Timekeeper moves offset_ns, and only forward.
 * dilation_ppm is the configured dilation (base_dilation_ppm) times the host's CPU
 * oversubscription, which the Timekeeper's governor re-anchors (r0_ns, offset_ns) as it
 * changes (revati/timekeeper/governor.py); it never goes below base_dilation_ppm.
 * The other virtual clocks are fixed distances from V: CLOCK_REALTIME = V + realtime_delta_ns,
 * CLOCK_BOOTTIME = V + boottime_delta_ns (both sampled once when the page is created).
 *
 * The page is ABI: fixed-width fields, little-endian, a layout version, and a seqlock. The
 * writer makes seq odd, writes the fields, then makes seq even; a reader retries while seq is
 * odd or changed under it. shim/tests/clock_page_layout.c asserts the offsets below and
 * revati/timekeeper/clock_page.py mirrors them (tests/timewarp/test_clock_page.py checks both).
 */
#ifndef REVATI_CLOCK_PAGE_H
#define REVATI_CLOCK_PAGE_H

#include <stdint.h>

#define RV_CLOCK_MAGIC 0x4b434f4c43565254ULL /* "TRVCLOCK" read as little-endian bytes */
#define RV_CLOCK_LAYOUT_VERSION 2u
#define RV_CLOCK_PAGE_SIZE 4096u
#define RV_CLOCK_SOCK_MAX 108u /* sizeof(sockaddr_un.sun_path) */

enum { RV_CLOCK_F_ACTIVE = 1u }; /* the Timekeeper is running */

typedef struct rv_clock_page {
  uint64_t magic;              /*   0: RV_CLOCK_MAGIC */
  uint32_t layout_version;     /*   8: RV_CLOCK_LAYOUT_VERSION */
  uint32_t flags;              /*  12: RV_CLOCK_F_* */
  uint64_t seq;                /*  16: seqlock; odd while the writer is inside */
  int64_t r0_ns;               /*  24: real CLOCK_MONOTONIC at the anchor */
  int64_t offset_ns;           /*  32: virtual time at the anchor; only grows */
  int64_t dilation_ppm;        /*  40: dilation x 1e6 (1000000 = real speed) */
  int64_t realtime_delta_ns;   /*  48: CLOCK_REALTIME - CLOCK_MONOTONIC at creation */
  int64_t boottime_delta_ns;   /*  56: CLOCK_BOOTTIME - CLOCK_MONOTONIC at creation */
  uint64_t epoch;              /*  64: number of jumps published */
  int64_t jumped_ns;           /*  72: total virtual time skipped by jumps */
  int32_t timekeeper_pid;      /*  80 */
  uint32_t protocol_version;   /*  84: wire protocol spoken on sock_path */
  char sock_path[RV_CLOCK_SOCK_MAX]; /* 88: the Timekeeper's AF_UNIX SOCK_SEQPACKET socket */
  uint32_t pad0;               /* 196 */
  int64_t base_dilation_ppm;   /* 200: the configured dilation; dilation_ppm >= it (0: unset) */
  uint8_t reserved[RV_CLOCK_PAGE_SIZE - 208];
} rv_clock_page;

_Static_assert(sizeof(rv_clock_page) == RV_CLOCK_PAGE_SIZE, "clock page is one page");

/* One consistent snapshot of the fields a clock read needs. */
typedef struct rv_clock_snap {
  int64_t r0_ns, offset_ns, dilation_ppm, base_dilation_ppm;
} rv_clock_snap;

static inline void rv_clock_page_read(const volatile rv_clock_page *p, rv_clock_snap *s) {
  for (;;) {
    uint64_t a = __atomic_load_n(&p->seq, __ATOMIC_ACQUIRE);
    if (a & 1) { __builtin_ia32_pause(); continue; }
    s->r0_ns = p->r0_ns;
    s->offset_ns = p->offset_ns;
    s->dilation_ppm = p->dilation_ppm;
    s->base_dilation_ppm = p->base_dilation_ppm;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&p->seq, __ATOMIC_RELAXED) == a) return;
  }
}

/* Virtual monotonic ns now, with the real clock read inside the seqlock: the writer re-anchors
 * (r0_ns, offset_ns, dilation_ppm) at a real time it reads after making seq odd, so a reading
 * that straddles a change of rate retries instead of extrapolating the old rate past the anchor
 * (which could run ahead of the new one: time would step back). */
static inline int64_t rv_clock_page_now(const volatile rv_clock_page *p, int64_t (*real_now)(void)) {
  for (;;) {
    uint64_t a = __atomic_load_n(&p->seq, __ATOMIC_ACQUIRE);
    if (a & 1) { __builtin_ia32_pause(); continue; }
    int64_t r0 = p->r0_ns, off = p->offset_ns, dil = p->dilation_ppm;
    int64_t r = real_now();
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&p->seq, __ATOMIC_RELAXED) != a) continue;
    int64_t d = r - r0;
    if (dil != 1000000) d = (int64_t)((__int128)d * 1000000 / dil);
    return d + off;
  }
}

/* Virtual monotonic ns for real monotonic ns r. */
static inline int64_t rv_clock_virtual(const rv_clock_snap *s, int64_t r) {
  int64_t d = r - s->r0_ns;
  if (s->dilation_ppm != 1000000) d = (int64_t)((__int128)d * 1000000 / s->dilation_ppm);
  return d + s->offset_ns;
}

/* Real ns that virtual span v takes at the current rate when nothing jumps. If the clock
 * speeds up meanwhile (the governor lowers dilation_ppm), a timer set from this fires late;
 * the Timekeeper wakes waiters whose deadline has passed (Timekeeper._wake_overdue). Sleeping
 * at the base rate instead would wake every timed waiter early and again and again while the
 * host is oversubscribed, which oversubscribes it further. */
static inline int64_t rv_clock_real_span(const rv_clock_snap *s, int64_t v) {
  if (s->dilation_ppm == 1000000) return v;
  __int128 r = (__int128)v * s->dilation_ppm / 1000000;
  /* saturated: a frozen clock (revati_clock_freeze) runs a million times slower, and a long
   * timeout would overflow; a quarter of the range is still centuries */
  if (r > INT64_MAX / 4) return INT64_MAX / 4;
  return (int64_t)r;
}

#endif
