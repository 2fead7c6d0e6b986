/* Duration sources: where the time of every recorded op comes from (REVATI_PREDICTOR).
 *
 * "sidecar" (the default): the trained predictor, asked through the prediction sidecar of the
 * process tree (predictor_client.c); the roofline when no sidecar answers.
 * "roofline": FLOPs and bytes of each op against the part's peaks (roofline.c).
 * "constant:<D>" (D like 1ms, 250us, 10ns): every op takes exactly D, for exactness tests.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

static uint64_t rv_constant_value_ns;
static uint64_t constant_ns(const rv_op *op, const rv_gpu_spec *g) {
  (void)op; (void)g;
  return rv_constant_value_ns;
}
static char rv_constant_name[64];
static rv_duration_source rv_constant_source = {rv_constant_name, constant_ns};

const rv_duration_source *rv_duration = &rv_roofline_source;

/* Parses "<number><unit>" with unit ns, us, ms or s. Returns -1 on error. */
static double parse_duration_ns(const char *s) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || v < 0) return -1;
  if (!strcmp(end, "ns")) return v;
  if (!strcmp(end, "us")) return v * 1e3;
  if (!strcmp(end, "ms")) return v * 1e6;
  if (!strcmp(end, "s")) return v * 1e9;
  return -1;
}

void rv_duration_init(const char *spec) {
  if (!spec || !*spec || !strcmp(spec, "sidecar")) {
    /* The trained predictor when a sidecar is running for this process tree. */
    const rv_duration_source *s = rv_sidecar_init();
    rv_duration = s ? s : &rv_roofline_source;
    if (!s && spec && *spec) rv_log(RV_LOG_ERROR, "REVATI_PREDICTOR=sidecar but no sidecar answered; using the roofline");
    return;
  }
  if (!strcmp(spec, "roofline")) {
    rv_duration = &rv_roofline_source;
    return;
  }
  if (!strncmp(spec, "constant:", 9)) {
    double ns = parse_duration_ns(spec + 9);
    if (ns >= 0) {
      rv_constant_value_ns = (uint64_t)ns;
      snprintf(rv_constant_name, sizeof rv_constant_name, "%s", spec);
      rv_duration = &rv_constant_source;
      return;
    }
  }
  rv_log(RV_LOG_ERROR, "REVATI_PREDICTOR=%s not understood (roofline | constant:<n>{ns,us,ms,s}); using roofline",
         spec);
  rv_duration = &rv_roofline_source;
}
