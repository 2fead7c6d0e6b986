/* libc interposition for the virtual clock (see timewarp.c and clock_page.h).
 *
 * Clocks read the clock page; sleeps and waits with a timeout turn their virtual deadline
 * into a wait the Timekeeper can end with a jump. With REVATI_TIMEWARP unset or 0 (rv_tw_on
 * == 0), and for the shim's own calls (rv_tw_guard), every function here calls libc's.
 * Per-thread and per-process CPU clocks always stay real.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "libc_real.h"
#include "shim.h"
#include "timewarp.h"

#define FAKE (rv_tw_on && !rv_tw_guard)

/* ----------------------------------------------------------------- helpers */

#define NS 1000000000LL
#define RV_TW_SEM_SLICE_NS 50000000LL /* 50 ms */

/* NOTE: glibc declares some of these pointers nonnull, so the compiler may drop a plain NULL
 * test; callers do pass NULL (libc's own functions tolerate it), so test through a volatile. */
static inline int is_null(const void *p) {
  const void *volatile q = p;
  return q == NULL;
}

static int64_t ts_ns(const struct timespec *ts) { return (int64_t)ts->tv_sec * NS + ts->tv_nsec; }

static void ns_ts(int64_t ns, struct timespec *ts) {
  if (ns < 0) ns = 0;
  ts->tv_sec = ns / NS;
  ts->tv_nsec = ns % NS;
}

static int ts_valid(const struct timespec *ts) { return ts->tv_nsec >= 0 && ts->tv_nsec < NS && ts->tv_sec >= 0; }

/* Distance of a clock from V, or 0 when the clock stays real (CPU-time clocks, TAI ...). */
static int virtual_delta(clockid_t clk, int64_t *delta) {
  switch (clk) {
    case CLOCK_MONOTONIC: case CLOCK_MONOTONIC_RAW: case CLOCK_MONOTONIC_COARSE:
      *delta = 0; return 1;
    case CLOCK_REALTIME: case CLOCK_REALTIME_COARSE:
      *delta = rv_tw_realtime_delta; return 1;
    case CLOCK_BOOTTIME:
      *delta = rv_tw_boottime_delta; return 1;
    default:
      return 0;
  }
}

/* Virtual-monotonic deadline for a relative timeout. */
static int64_t after(int64_t ns) { return rv_tw_now() + ns; }

/* --------------------------------------------------------------------- clocks */

RV_EXPORT int clock_gettime(clockid_t clk, struct timespec *ts) {
  RV_LIBC_INIT();
  int64_t delta;
  if (!FAKE || !virtual_delta(clk, &delta)) return rv_libc_clock_gettime(clk, ts);
  ns_ts(rv_tw_now() + delta, ts);
  return 0;
}

RV_EXPORT int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
  RV_LIBC_INIT();
  if (!FAKE) return rv_libc_gettimeofday(tv, tz);
  if (tz) rv_libc_gettimeofday(NULL, tz);
  if (!is_null(tv)) {
    int64_t ns = rv_tw_now() + rv_tw_realtime_delta;
    tv->tv_sec = ns / NS;
    tv->tv_usec = (ns % NS) / 1000;
  }
  return 0;
}

RV_EXPORT time_t time(time_t *t) {
  RV_LIBC_INIT();
  if (!FAKE) return rv_libc_time(t);
  time_t s = (time_t)((rv_tw_now() + rv_tw_realtime_delta) / NS);
  if (t) *t = s;
  return s;
}

/* --------------------------------------------------------------------- sleeps */

/* Sleeps until virtual deadline d. Returns 0, or -1 with EINTR. */
static int sleep_until(int64_t d) { return rv_tw_poll_until(NULL, 0, d, NULL, RV_WAIT_SLEEP) < 0 ? -1 : 0; }

RV_EXPORT int sched_yield(void) {
  RV_LIBC_INIT();
  if (!FAKE) return rv_libc_sched_yield();
  rv_tw_yield();
  return 0;
}

RV_EXPORT int nanosleep(const struct timespec *req, struct timespec *rem) {
  RV_LIBC_INIT();
  if (FAKE && req && ts_valid(req) && ts_ns(req) == 0) { rv_tw_yield(); return 0; } /* a yield */
  if (!FAKE || !req || !ts_valid(req)) return rv_libc_nanosleep(req, rem);
  int64_t d = after(ts_ns(req));
  if (sleep_until(d) < 0) {
    if (rem) ns_ts(d - rv_tw_now(), rem);
    return -1;
  }
  return 0;
}

RV_EXPORT int clock_nanosleep(clockid_t clk, int flags, const struct timespec *req, struct timespec *rem) {
  RV_LIBC_INIT();
  int64_t delta;
  if (!FAKE || !req || !ts_valid(req) || !virtual_delta(clk, &delta)) return rv_libc_clock_nanosleep(clk, flags, req, rem);
  int64_t d;
  if (flags & TIMER_ABSTIME) d = ts_ns(req) - delta;
  else if (ts_ns(req) == 0) { rv_tw_yield(); return 0; } /* a yield */
  else d = after(ts_ns(req));
  if ((flags & TIMER_ABSTIME) && d <= rv_tw_now()) { rv_tw_yield(); return 0; } /* Python's sleep(0) */
  if (sleep_until(d) < 0) {
    if (rem && !(flags & TIMER_ABSTIME)) ns_ts(d - rv_tw_now(), rem);
    return errno;
  }
  return 0;
}

RV_EXPORT int usleep(useconds_t usec) {
  RV_LIBC_INIT();
  if (FAKE && usec == 0) { rv_tw_yield(); return 0; }
  if (!FAKE) return rv_libc_usleep(usec);
  return sleep_until(after((int64_t)usec * 1000));
}

RV_EXPORT unsigned int sleep(unsigned int seconds) {
  RV_LIBC_INIT();
  if (!FAKE || seconds == 0) return rv_libc_sleep(seconds);
  int64_t d = after((int64_t)seconds * NS);
  if (sleep_until(d) < 0) return (unsigned)((d - rv_tw_now() + NS - 1) / NS);
  return 0;
}

/* -------------------------------------------------------------- poll and select */

RV_EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout) {
  RV_LIBC_INIT();
  if (!FAKE || timeout <= 0) return rv_libc_poll(fds, n, timeout);
  return rv_tw_poll_until(fds, n, after((int64_t)timeout * 1000000), NULL, RV_WAIT_POLL);
}

RV_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask) {
  RV_LIBC_INIT();
  if (!FAKE || !ts || !ts_valid(ts) || ts_ns(ts) == 0) return rv_libc_ppoll(fds, n, ts, mask);
  return rv_tw_poll_until(fds, n, after(ts_ns(ts)), mask, RV_WAIT_POLL);
}

/* select through poll: the fd sets become a pollfd array and back. */
static int select_virtual(int nfds, fd_set *r, fd_set *w, fd_set *e, int64_t d, const sigset_t *mask) {
  struct pollfd stack[64], *p = stack;
  int cnt = 0;
  for (int fd = 0; fd < nfds; fd++) {
    short ev = (short)((r && FD_ISSET(fd, r) ? POLLIN : 0) | (w && FD_ISSET(fd, w) ? POLLOUT : 0) |
                       (e && FD_ISSET(fd, e) ? POLLPRI : 0));
    if (!ev) continue;
    if (p == stack && cnt == 64) {
      p = malloc((size_t)nfds * sizeof *p);
      if (!p) { errno = ENOMEM; return -1; }
      memcpy(p, stack, sizeof stack);
    }
    p[cnt++] = (struct pollfd){fd, ev, 0};
  }
  int rc = rv_tw_poll_until(p, (nfds_t)cnt, d, mask, RV_WAIT_POLL);
  if (rc >= 0) {
    for (int i = 0; i < cnt; i++)
      if (p[i].revents & POLLNVAL) { rc = -1; errno = EBADF; break; }
  }
  if (rc >= 0) {
    if (r) FD_ZERO(r);
    if (w) FD_ZERO(w);
    if (e) FD_ZERO(e);
    rc = 0;
    for (int i = 0; i < cnt; i++) {
      short re = p[i].revents, ev = p[i].events;
      if (r && (ev & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR))) { FD_SET(p[i].fd, r); rc++; }
      if (w && (ev & POLLOUT) && (re & (POLLOUT | POLLERR))) { FD_SET(p[i].fd, w); rc++; }
      if (e && (ev & POLLPRI) && (re & POLLPRI)) { FD_SET(p[i].fd, e); rc++; }
    }
  }
  if (p != stack) {
    int err = errno;
    free(p);
    errno = err;
  }
  return rc;
}

RV_EXPORT int select(int nfds, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv) {
  RV_LIBC_INIT();
  if (!FAKE || !tv || tv->tv_usec < 0 || tv->tv_usec >= 1000000 || tv->tv_sec < 0 ||
      (tv->tv_sec == 0 && tv->tv_usec == 0))
    return rv_libc_select(nfds, r, w, e, tv);
  int64_t d = after((int64_t)tv->tv_sec * NS + (int64_t)tv->tv_usec * 1000);
  int rc = select_virtual(nfds, r, w, e, d, NULL);
  int err = errno;
  int64_t left = d - rv_tw_now(); /* Linux updates the timeout to the time not slept */
  if (left < 0) left = 0;
  tv->tv_sec = left / NS;
  tv->tv_usec = (left % NS) / 1000;
  errno = err;
  return rc;
}

RV_EXPORT int pselect(int nfds, fd_set *r, fd_set *w, fd_set *e, const struct timespec *ts, const sigset_t *mask) {
  RV_LIBC_INIT();
  if (!FAKE || !ts || !ts_valid(ts) || ts_ns(ts) == 0) return rv_libc_pselect(nfds, r, w, e, ts, mask);
  return select_virtual(nfds, r, w, e, after(ts_ns(ts)), mask);
}

/* --------------------------------------------------------------------- epoll */

/* Waits for the epoll fd itself to become readable (an epoll fd is pollable), then takes the
 * events without blocking. */
static int epoll_virtual(int epfd, struct epoll_event *ev, int max, int timeout, const sigset_t *mask) {
  int64_t d = after((int64_t)timeout * 1000000);
  for (;;) {
    struct pollfd p = {epfd, POLLIN, 0};
    int rc = rv_tw_poll_until(&p, 1, d, mask, RV_WAIT_POLL);
    if (rc < 0) return -1;
    if (p.revents & POLLNVAL) { errno = EBADF; return -1; }
    int k = rv_libc_epoll_wait(epfd, ev, max, 0);
    if (k != 0 || rc == 0) return k;
    /* Another thread took the events first: wait again until the same deadline. */
  }
}

RV_EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout) {
  RV_LIBC_INIT();
  if (!FAKE || timeout <= 0) return rv_libc_epoll_wait(epfd, ev, max, timeout);
  return epoll_virtual(epfd, ev, max, timeout, NULL);
}

RV_EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout, const sigset_t *mask) {
  RV_LIBC_INIT();
  if (!FAKE || timeout <= 0) return rv_libc_epoll_pwait(epfd, ev, max, timeout, mask);
  return epoll_virtual(epfd, ev, max, timeout, mask);
}

/* ------------------------------------------------ condition variables, semaphores */

/* The clock a condition variable's absolute timeout is on (pthread_condattr_setclock).
 * NOTE: glibc keeps it in bit 1 of __wrefs (__PTHREAD_COND_CLOCK_MONOTONIC_MASK) since 2.25;
 * the offset comes from the public header we compile against. */
static clockid_t cond_clock(const pthread_cond_t *c) {
  return (c->__data.__wrefs & 2) ? CLOCK_MONOTONIC : CLOCK_REALTIME;
}

/* One real slice of a virtual wait: the real absolute time on clk that is min(left, slice)
 * away. */
static void slice_abs(clockid_t clk, int64_t left, struct timespec *abs) {
  int64_t span = rv_tw_real_span(left);
  if (span > RV_TW_SLICE_NS) span = RV_TW_SLICE_NS;
  struct timespec now;
  rv_libc_clock_gettime(clk, &now);
  ns_ts(ts_ns(&now) + span, abs);
}

static int cond_virtual(pthread_cond_t *c, pthread_mutex_t *m, clockid_t clk, const struct timespec *abs) {
  int64_t delta;
  if (!virtual_delta(clk, &delta)) return rv_libc_pthread_cond_clockwait(c, m, clk, abs);
  if (!ts_valid(abs)) return EINVAL;
  int64_t d = ts_ns(abs) - delta, left = d - rv_tw_now();
  if (left <= 0) return ETIMEDOUT;
  /* One real wait until the deadline's real equivalent; a jump to the deadline ends it early
   * (the waker thread broadcasts c, see rv_tw_cond_watch). Without the waker: one real slice,
   * then a spurious wake-up (which POSIX allows) so the caller re-checks its predicate.
   * NOTE: never re-wait in here: that could miss a signal sent between two waits by a thread
   * that changed the predicate without holding the mutex. */
  uint32_t tok = rv_tw_wait_begin(d, RV_WAIT_COND);
  int slot = tok ? rv_tw_cond_watch(c, m) : -1;
  struct timespec rabs;
  if (slot >= 0) {
    struct timespec now;
    rv_libc_clock_gettime(CLOCK_MONOTONIC, &now);
    ns_ts(ts_ns(&now) + rv_tw_real_span(left), &rabs);
  } else {
    slice_abs(CLOCK_MONOTONIC, left, &rabs);
  }
  int rc = rv_libc_pthread_cond_clockwait(c, m, CLOCK_MONOTONIC, &rabs);
  rv_tw_cond_unwatch(slot);
  if (rc == ETIMEDOUT) rc = rv_tw_now() >= d ? ETIMEDOUT : 0;
  rv_tw_wait_end(tok);
  return rc;
}

RV_EXPORT int pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *abs) {
  RV_LIBC_INIT();
  if (!FAKE || is_null(abs)) return rv_libc_pthread_cond_timedwait(c, m, abs);
  return cond_virtual(c, m, cond_clock(c), abs);
}

RV_EXPORT int pthread_cond_clockwait(pthread_cond_t *c, pthread_mutex_t *m, clockid_t clk, const struct timespec *abs) {
  RV_LIBC_INIT();
  if (!FAKE || is_null(abs)) return rv_libc_pthread_cond_clockwait(c, m, clk, abs);
  return cond_virtual(c, m, clk, abs);
}

static int sem_virtual(sem_t *s, clockid_t clk, const struct timespec *abs) {
  int64_t delta;
  if (!virtual_delta(clk, &delta)) return rv_libc_sem_clockwait(s, clk, abs);
  if (!ts_valid(abs)) { errno = EINVAL; return -1; }
  int64_t d = ts_ns(abs) - delta;
  if (sem_trywait(s) == 0) return 0;
  if (rv_tw_now() >= d) { errno = ETIMEDOUT; return -1; }
  /* A semaphore keeps its count, so re-waiting loses no post. With the waker, one real wait
   * (in slices of at most RV_TW_SEM_SLICE_NS, in case a kick lands just before the wait) that
   * a jump to the deadline interrupts with a kick signal; without it, 1 ms slices. */
  uint32_t tok = rv_tw_wait_begin(d, RV_WAIT_SEM);
  int slot = tok ? rv_tw_sem_watch() : -1;
  int rc;
  for (;;) {
    int64_t left = d - rv_tw_now();
    if (left <= 0) { rc = -1; errno = ETIMEDOUT; break; }
    struct timespec rabs;
    if (slot >= 0) {
      int64_t span = rv_tw_real_span(left);
      if (span > RV_TW_SEM_SLICE_NS) span = RV_TW_SEM_SLICE_NS;
      struct timespec now;
      rv_libc_clock_gettime(CLOCK_MONOTONIC, &now);
      ns_ts(ts_ns(&now) + span, &rabs);
    } else {
      slice_abs(CLOCK_MONOTONIC, left, &rabs);
    }
    rc = rv_libc_sem_clockwait(s, CLOCK_MONOTONIC, &rabs);
    if (rc == 0) break;
    if (errno == EINTR && slot >= 0 && rv_tw_kicked()) continue; /* our kick: the clock jumped */
    if (errno != ETIMEDOUT) break;
  }
  int err = errno;
  rv_tw_cond_unwatch(slot);
  rv_tw_wait_end(tok);
  errno = err;
  return rc;
}

RV_EXPORT int sem_timedwait(sem_t *s, const struct timespec *abs) {
  RV_LIBC_INIT();
  if (!FAKE || is_null(abs)) return rv_libc_sem_timedwait(s, abs);
  return sem_virtual(s, CLOCK_REALTIME, abs);
}

RV_EXPORT int sem_clockwait(sem_t *s, clockid_t clk, const struct timespec *abs) {
  RV_LIBC_INIT();
  if (!FAKE || is_null(abs)) return rv_libc_sem_clockwait(s, clk, abs);
  return sem_virtual(s, clk, abs);
}
