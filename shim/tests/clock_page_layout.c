/* The clock page is ABI between the shim and the Timekeeper: its offsets must not move.
 * Run with --json to print the layout for the Python mirror's test. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "clock_page.h"

#define FIELDS(X)                                                                                 \
  X(magic, 0, 8) X(layout_version, 8, 4) X(flags, 12, 4) X(seq, 16, 8) X(r0_ns, 24, 8)            \
  X(offset_ns, 32, 8) X(dilation_ppm, 40, 8) X(realtime_delta_ns, 48, 8)                          \
  X(boottime_delta_ns, 56, 8) X(epoch, 64, 8) X(jumped_ns, 72, 8) X(timekeeper_pid, 80, 4)        \
  X(protocol_version, 84, 4) X(sock_path, 88, 108) X(pad0, 196, 4) \
  X(base_dilation_ppm, 200, 8) X(reserved, 208, 3888)

int main(int argc, char **argv) {
  int fails = 0;
  if (argc > 1 && !strcmp(argv[1], "--json")) {
    printf("{\"size\": %zu, \"version\": %u, \"magic\": %llu, \"fields\": {", sizeof(rv_clock_page),
           RV_CLOCK_LAYOUT_VERSION, (unsigned long long)RV_CLOCK_MAGIC);
    const char *sep = "";
#define PRINT(f, o, s)                                                                            \
  printf("%s\"%s\": [%zu, %zu]", sep, #f, offsetof(rv_clock_page, f), sizeof(((rv_clock_page *)0)->f)); \
  sep = ", ";
    FIELDS(PRINT)
    printf("}}\n");
    return 0;
  }
#define CHECK(f, o, s)                                                                            \
  if (offsetof(rv_clock_page, f) != (o) || sizeof(((rv_clock_page *)0)->f) != (s)) {            \
    printf("FAIL %s: offset %zu size %zu, want %d %d\n", #f, offsetof(rv_clock_page, f),          \
           sizeof(((rv_clock_page *)0)->f), (o), (s));                                            \
    fails++;                                                                                      \
  }
  FIELDS(CHECK)
  if (sizeof(rv_clock_page) != 4096) { printf("FAIL sizeof %zu\n", sizeof(rv_clock_page)); fails++; }
  /* The arithmetic: real speed, and dilation 2 (CPU work counts half). */
  rv_clock_snap s = {.r0_ns = 1000, .offset_ns = 5000, .dilation_ppm = 1000000};
  if (rv_clock_virtual(&s, 3000) != 7000) { printf("FAIL virtual at d=1\n"); fails++; }
  s.dilation_ppm = 2000000;
  if (rv_clock_virtual(&s, 3000) != 6000) { printf("FAIL virtual at d=2\n"); fails++; }
  if (rv_clock_real_span(&s, 500) != 1000) { printf("FAIL real span at d=2\n"); fails++; }
  printf(fails ? "clock_page_layout: %d failures\n" : "clock_page_layout: ok%.0d\n", fails);
  return fails != 0;
}
