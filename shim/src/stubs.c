/* Generated stubs: every entry point of entrypoints.def marked STUB or STUBP.
 *
 * A stub initializes the shim, logs its name once (entries.c) and returns the API's "not
 * supported" code (STUBP: NULL). It is declared without parameters: under the SysV ABI the
 * caller owns its arguments, so any call signature is safe. This file includes no NVIDIA
 * header on purpose. */
#include "shim.h"

enum {
#define EP(lib, name, kind) RVI_##name,
#include "../entrypoints.def"
#undef EP
  RVI_COUNT
};

#define RV_STUB_IMPL(lib, name)
#define RV_STUB_STUB(lib, name) \
  RV_EXPORT int name(void) { rv_ensure_init(); return rv_stub_hit(RVI_##name); }
#define RV_STUB_STUBP(lib, name) \
  RV_EXPORT void *name(void) { rv_ensure_init(); rv_stub_hit(RVI_##name); return (void *)0; }
#define EP(lib, name, kind) RV_STUB_##kind(lib, name)
#include "../entrypoints.def"
#undef EP
