/* Resolution of libc's functions behind the interposed ones (libc_real.h). */
#define _GNU_SOURCE
#include <dlfcn.h>

#include "libc_real.h"

#define LIBC(ret, name, params, ver) rv_libc_##name##_fn rv_libc_##name;
#include "libc.def"
#undef LIBC

static pthread_once_t libc_once = PTHREAD_ONCE_INIT;

/* The versioned ones have an old compat symbol that a plain dlsym(RTLD_NEXT) would return. */
static void resolve_once(void) {
#define LIBC(ret, name, params, ver)                                                              \
  {                                                                                               \
    const char *v = ver;                                                                          \
    rv_libc_##name = v ? (rv_libc_##name##_fn)dlvsym(RTLD_NEXT, #name, v) : NULL;                 \
    if (!rv_libc_##name) rv_libc_##name = (rv_libc_##name##_fn)dlsym(RTLD_NEXT, #name);           \
  }
#include "libc.def"
#undef LIBC
}

void rv_libc_resolve(void) { pthread_once(&libc_once, resolve_once); }

int rv_real_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask) {
  RV_LIBC_INIT();
  return rv_libc_ppoll(fds, n, ts, mask);
}

int rv_real_clock_gettime(clockid_t clk, struct timespec *ts) {
  RV_LIBC_INIT();
  return rv_libc_clock_gettime(clk, ts);
}
