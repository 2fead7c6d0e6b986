/* libc's own functions behind the ones the shim interposes (libc.def): resolved once, for the
 * interposers (libc.c) and for the shim's own waits and clocks (timewarp.c). */
#ifndef REVATI_LIBC_REAL_H
#define REVATI_LIBC_REAL_H

#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

/* rv_libc_<name>: libc's <name>, NULL until rv_libc_resolve() has run. */
#define LIBC(ret, name, params, ver)                                                              \
  typedef ret(*rv_libc_##name##_fn) params;                                                       \
  extern __attribute__((visibility("hidden"))) rv_libc_##name##_fn rv_libc_##name;
#include "libc.def"
#undef LIBC

void rv_libc_resolve(void); /* once (pthread_once); safe to call from any thread */

/* rv_libc_sem_clockwait, the last one resolved, is NULL until the resolution is done. */
#define RV_LIBC_INIT()                                                                            \
  do {                                                                                            \
    if (RV_UNLIKELY(!rv_libc_sem_clockwait)) rv_libc_resolve();                                   \
  } while (0)

/* The same, as functions that resolve first. */
int rv_real_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask);
int rv_real_clock_gettime(clockid_t clk, struct timespec *ts);

#endif
