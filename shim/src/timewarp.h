/* The causal virtual clock on the shim side: the mapped clock page and this process's
 * connection to the Timekeeper (revati/timekeeper). OFF unless REVATI_TIMEWARP=1; when off,
 * every interposed libc function passes straight through to libc. */
#ifndef REVATI_TIMEWARP_H
#define REVATI_TIMEWARP_H

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>

#include "clock_page.h"
#include "libc_real.h"
#include "shim.h"

#define RV_TLS __thread __attribute__((tls_model("initial-exec")))

extern int rv_tw_on;                   /* REVATI_TIMEWARP=1 and the clock page is mapped */
extern RV_TLS int rv_tw_guard;         /* >0 inside the shim: interposed libc calls are real */
extern int64_t rv_tw_realtime_delta;   /* CLOCK_REALTIME - V */
extern int64_t rv_tw_boottime_delta;   /* CLOCK_BOOTTIME - V */

/* What a WAITING actor waits on: the "kind" of the (time, kind, id) tie-break. */
enum rv_wait_kind { RV_WAIT_GPU = 0, RV_WAIT_SLEEP = 1, RV_WAIT_POLL = 2, RV_WAIT_COND = 3, RV_WAIT_SEM = 4,
                    RV_WAIT_YIELD = 5 };
/* Flag on a kind: an idle tick the Timekeeper may coalesce (REVATI_TIMEWARP_LAZY). */
#define RV_WAIT_LAZY 0x100

void rv_timewarp_init(void);
/* Real CLOCK_MONOTONIC in ns (never virtual). */
int64_t rv_tw_real_mono(void);
/* Virtual CLOCK_MONOTONIC in ns. Only meaningful when rv_tw_on. */
int64_t rv_tw_now(void);
/* Real ns a virtual span takes when nothing jumps (dilation applied). */
int64_t rv_tw_real_span(int64_t virtual_ns);

/* Waits until the user fds are ready (real ppoll semantics, n may be 0) or virtual time
 * reaches deadline (-1: forever). Returns the number of ready user fds, 0 at the deadline, or
 * -1 with errno (EINTR ...). While it waits, the thread is a WAITING actor of the Timekeeper,
 * which may jump the clock to its deadline and wake it. */
int rv_tw_poll_until(struct pollfd *fds, nfds_t n, int64_t deadline, const sigset_t *sigmask, int kind);

/* For waits that cannot poll the Timekeeper's socket (condition variables, semaphores):
 * announce WAITING(deadline) / RUNNING around a loop of short real waits. begin returns a
 * token to pass to end, or 0 when no announcement was made. */
uint32_t rv_tw_wait_begin(int64_t deadline, int kind);
void rv_tw_wait_end(uint32_t token);
/* A yield (sched_yield, or a zero-length sleep). After a few in a row with nothing else in
 * between, the thread is yield-spinning: it is announced WAITING with no deadline (it can only
 * go on once another thread writes), and each yield becomes a 50 us real sleep, so that the
 * thread is idle in /proc while it spins. Any other wait, or a GPU op, ends the spin
 * (rv_tw_unspin). */
void rv_tw_yield(void);
void rv_tw_unspin(void);
/* Between wait_begin and wait_end of a condition wait: the process's waker thread broadcasts c
 * (under m, which the caller holds) when the Timekeeper wakes this thread. Returns a slot for
 * unwatch, or -1 (then the caller must wait in slices). */
int rv_tw_cond_watch(pthread_cond_t *c, pthread_mutex_t *m);
void rv_tw_cond_unwatch(int slot);
/* The same for a semaphore wait: the waker interrupts it with RV_TW_KICK_SIG (the wait fails
 * with EINTR and rv_tw_kicked() returns 1 once). -1 when the signal could not be claimed. */
#define RV_TW_KICK_SIG (SIGRTMAX - 5)
int rv_tw_sem_watch(void);
int rv_tw_kicked(void);
/* Real length of one slice of such a loop (ns): the latency of noticing a jump. */
#define RV_TW_SLICE_NS 1000000LL

/* Collectives resolved by the Timekeeper (see collectives.c for the timeline side).
 * rv_tw_comm announces a communicator rank (so that a rank that dies is known as one);
 * rv_tw_arrive sends a batch of arrivals, each encoded as
 *   comm, chan, seq, op, participants, slot, duration, b, nrefs, (comm, chan, seq, a) * nrefs
 * (the arrival time is max(b, end(ref) + a)); both return -1 without a Timekeeper.
 * rv_tw_resolve asks for the ends of n collectives: ends[i] gets the end (virtual ns) or -1.
 * wait=1 blocks until all are resolved (the thread waits for the other ranks' arrivals);
 * wait=0 answers at once. Returns how many are unresolved, or -1 without a Timekeeper. */
int rv_tw_comm(uint64_t comm, int nranks, int rank);
/* Holds (+1) / releases (-1) the clock: no time passes and no jump happens meanwhile (the
 * shim's own work in an emulated thread, e.g. a sidecar miss). 0, or -1 without a Timekeeper. */
int rv_tw_hold(int delta);
int rv_tw_arrive(const int64_t *vals, size_t n);
int rv_tw_resolve(const rv_ckey *keys, int n, int wait, int64_t *ends);
/* A random id of this process (set at init and after fork): its private joins' "comm". */
uint64_t rv_tw_private_id(void);

/* Step anatomy (issue 11): every thread accounts its virtual time to exactly one state at a
 * time, a stack of them (a wait inside a sidecar round trip inside a JIT freeze ...). Each
 * state keeps the virtual ns spent in it, the part of those ns during which this process's GPU
 * timeline was busy (predicted work placed on any stream, rv_an_gpu), the real ns, and how
 * often it was entered. The vLLM plugin reads the counters at each engine step
 * (revati_thread_anatomy) and logs their deltas; the states add up to the step by
 * construction of the bookkeeping, which is what the step log's check tests. */
enum rv_an_state {
  RV_AN_RUN = 0,     /* running: none of the below (CPU, or a wait the shim does not see) */
  RV_AN_RUNNER,      /* running inside vLLM's model runner (execute_model, sample_tokens) */
  RV_AN_SCHED,       /* running inside vLLM's scheduler (schedule, update_from_output) */
  RV_AN_IDLE,        /* the engine had no work: blocked on its input queue */
  RV_AN_INPUT,       /* the engine took new requests from its input queue */
  RV_AN_GPU,         /* a GPU sync: stream, event, device, D2H copy (rv_wait_until) */
  RV_AN_COLL,        /* a RESOLVE round trip: waiting for the other ranks of a collective */
  RV_AN_SLEEP,       /* nanosleep and friends */
  RV_AN_POLL,        /* poll/select/epoll with a timeout (sockets, zmq) */
  RV_AN_COND,        /* timed condition waits (the GIL, Python conditions) */
  RV_AN_SEM,         /* timed semaphore waits (Python locks and queues with a timeout) */
  RV_AN_YIELD,       /* an announced yield-spin (vLLM's shm message queue) */
  RV_AN_SIDECAR,     /* a prediction sidecar round trip (a cache miss) */
  RV_AN_FROZEN,      /* the clock is frozen for a JIT compile held by this thread */
  RV_AN_STATES
};
/* The names of rv_an_read's values, and the calling thread's counters (revati_api.h). */
const char *rv_an_fields(void);
int rv_an_read(int64_t *out, int n);
/* Stops (+1) or restarts (-1) the deployment's clock (revati_clock_freeze). */
int rv_tw_freeze(int delta);
/* Enters / leaves a state on the calling thread (no-ops without the time warp). pop unwinds
 * to the innermost entry of that state; a pop of a state not on the stack is ignored. */
void rv_an_push(int state);
void rv_an_pop(int state);
/* Predicted GPU work placed on a timeline of this process from start to end (virtual ns). */
void rv_an_gpu(uint64_t start, uint64_t end);


#endif
