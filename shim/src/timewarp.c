/* The causal virtual clock, shim side: maps the clock page, joins the Timekeeper, and turns
 * every virtual deadline into a wait the Timekeeper can end with a jump.
 *
 * Transport. Each actor (a thread that waits on a virtual deadline, plus every process's
 * initial thread, which joins at load) holds its own AF_UNIX SOCK_SEQPACKET connection to the
 * Timekeeper. A message is one packet: a one-byte type, then a msgpack payload, with the
 * protocol version carried in the HELLO handshake (the wire contract of DESIGN.md).
 * NOTE: why not libzmq here, as the sidecar uses? A waiting thread must block on its user fds
 * *and* on its wake-up at once; with one kernel socket per actor that is one real ppoll() on
 * the user's fds plus ours, and the wake-up needs no helper thread. libzmq would add its own
 * I/O threads to every emulated process (threads that would themselves be blocking actors),
 * is not fork-safe (vLLM forks workers), and would have to be dlopen'ed from pyzmq's hash-named
 * wheel. SEQPACKET keeps message boundaries, so the framing is the same type + msgpack pair a
 * ZeroMQ relay (the pod sidecar) can forward unchanged. Dead processes show up as EOF.
 *
 *   shim -> TK  HELLO 0x01 [version, pid, tid]
 *               WAIT  0x03 [seq, deadline_ns, kind]     (deadline on the virtual monotonic clock)
 *               RUN   0x04 [seq]                        (the wait seq ended on its own)
 *               COMM  0x10 [comm, nranks, rank]        (this process is a rank of comm)
 *               ARRIVE 0x11 [count, arrival * count]    (collective arrivals, see timewarp.h)
 *               RESOLVE 0x12 [req, wait, (comm, chan, seq) * n]
 *               FREEZE 0x06 [delta]                    (+1: stop the clock while this process
 *                                                       does one-off work, -1: done; nests)
 *               FREEZE 0x06 [delta, 1]                 (a hold: the same, and no jump meanwhile)
 *   TK -> shim  WELCOME 0x02 [version, epoch]
 *               WAKE  0x05 [seq, now_ns]                (the clock jumped to this wait's deadline)
 *               RESOLVED 0x13 [req, end * n]            (-1: not resolved yet)
 *               ERROR 0x7F {"error": str, "code": str}
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "msgpack.h"
#include "shim.h"
#include "timewarp.h"

#define RV_TW_PROTOCOL 2
enum { MSG_HELLO = 0x01, MSG_WELCOME = 0x02, MSG_WAIT = 0x03, MSG_RUN = 0x04, MSG_WAKE = 0x05,
       MSG_FREEZE = 0x06,
       MSG_COMM = 0x10, MSG_ARRIVE = 0x11, MSG_RESOLVE = 0x12, MSG_RESOLVED = 0x13, MSG_ERROR = 0x7F };

int rv_tw_on;
RV_TLS int rv_tw_guard;
int64_t rv_tw_realtime_delta, rv_tw_boottime_delta;

static const volatile rv_clock_page *tw_page;
static char tw_sock_path[RV_CLOCK_SOCK_MAX];
static _Atomic int tw_lost;
static char tw_lazy[256] = "gloo_tcp_loop"; /* REVATI_TIMEWARP_LAZY, see tw_thread_is_lazy */ /* the Timekeeper went away: deadlines expire in real time */

static RV_TLS int tw_fd = -1;        /* this thread's connection */
static RV_TLS int tw_slot = -1;      /* its index in tw_fds */
static RV_TLS uint32_t tw_seq;       /* last wait announced */
static RV_TLS uint32_t tw_req;       /* last RESOLVE request */
static uint64_t tw_private;          /* rv_tw_private_id */
static RV_TLS int tw_in_wait;        /* a wait is in progress (signal handlers nest) */
static pthread_key_t tw_key;
static void tw_new_private_id(void);

/* Every open connection of the process, so that a forked child can drop its parent's. */
#define RV_TW_MAX_FDS 4096
static _Atomic int tw_fds[RV_TW_MAX_FDS];

/* ------------------------------------------------------------------ clock */

int64_t rv_tw_real_mono(void) {
  struct timespec ts;
  rv_real_clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t rv_tw_now(void) { return rv_clock_page_now(tw_page, rv_tw_real_mono); }

int64_t rv_tw_real_span(int64_t v) {
  rv_clock_snap s;
  rv_clock_page_read(tw_page, &s);
  return rv_clock_real_span(&s, v);
}

/* ------------------------------------------------------------- step anatomy
 *
 * Per thread, the virtual time since the thread's first mark is split over the states of
 * rv_an_state: at every state change (a mark), the interval since the previous mark goes to
 * the state the thread was in. A mark costs a clock-page read and a read of the GPU-busy
 * function below: no syscall. The counters are cumulative; the plugin logs their deltas. */

/* This process's GPU busy time as a function of virtual time: busy(t) = base + clamp(t - S, 0,
 * G - S), where [S, G] is the current run of back-to-back work on the process's timelines and
 * base the busy time before S. A launch at host time h starts at max(h, stream end) and every
 * stream end is <= G, so work placed from now on never starts before now: busy(t) is final
 * for t <= now, and each thread can keep busy(prev) from its previous mark.
 * NOTE: one run for all the process's streams (their union), not one per stream: a step's
 * critical path is what keeps the GPU busy at all, and vLLM's side streams (async output
 * copies) overlap the main one. Work after a pending collective counts from its lower bound
 * (this rank's arrival); rv_wait_until raises G to the resolved end. */
static struct {
  _Atomic uint64_t seq; /* odd while a new run is installed */
  int64_t base, s;
  _Atomic int64_t g;
  _Atomic int lock;
} gb;

void rv_an_gpu(uint64_t start_u, uint64_t end_u) {
  int64_t start = (int64_t)start_u, end = (int64_t)end_u;
  if (!rv_tw_on || end <= start || end <= gb.g) return;
  while (__atomic_exchange_n(&gb.lock, 1, __ATOMIC_ACQUIRE)) __builtin_ia32_pause();
  int64_t g = gb.g;
  if (start > g) { /* the GPU went idle at g: a new run from start */
    __atomic_fetch_add(&gb.seq, 1, __ATOMIC_ACQ_REL);
    gb.base += g - gb.s;
    gb.s = start;
    gb.g = end;
    __atomic_fetch_add(&gb.seq, 1, __ATOMIC_RELEASE);
  } else if (end > g) {
    gb.g = end;
  }
  __atomic_store_n(&gb.lock, 0, __ATOMIC_RELEASE);
}

static int64_t gb_busy(int64_t t) {
  for (;;) {
    uint64_t a = __atomic_load_n(&gb.seq, __ATOMIC_ACQUIRE);
    if (a & 1) { __builtin_ia32_pause(); continue; }
    int64_t base = gb.base, s = gb.s, g = gb.g;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&gb.seq, __ATOMIC_RELAXED) != a) continue;
    int64_t d = t - s;
    if (d < 0) d = 0;
    if (d > g - s) d = g - s;
    return base + d;
  }
}

#define RV_AN_DEPTH 16
typedef struct {
  int init, depth, over, state, freezes;
  uint8_t stack[RV_AN_DEPTH];
  int64_t pv, pr, pb;                /* virtual, real and GPU-busy ns at the last mark */
  int64_t cpu_frozen, cpu_at_freeze; /* the thread's CPU ns inside JIT freezes */
  int64_t v[RV_AN_STATES], b[RV_AN_STATES], r[RV_AN_STATES], n[RV_AN_STATES];
} rv_an;
static RV_TLS rv_an an;

/* Virtual ns now, and the real ns it was computed from (one seqlock read). */
static int64_t tw_now_real(int64_t *real) {
  for (;;) {
    uint64_t a = __atomic_load_n(&tw_page->seq, __ATOMIC_ACQUIRE);
    if (a & 1) { __builtin_ia32_pause(); continue; }
    int64_t r0 = tw_page->r0_ns, off = tw_page->offset_ns, dil = tw_page->dilation_ppm;
    int64_t r = rv_tw_real_mono();
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&tw_page->seq, __ATOMIC_RELAXED) != a) continue;
    int64_t d = r - r0;
    if (dil != 1000000) d = (int64_t)((__int128)d * 1000000 / dil);
    *real = r;
    return d + off;
  }
}

static void an_mark(void) {
  int64_t r, v = tw_now_real(&r), b = gb_busy(v);
  if (RV_UNLIKELY(!an.init)) {
    an.init = 1;
    an.state = RV_AN_RUN;
  } else {
    int st = an.state;
    int64_t dv = v - an.pv, db = b - an.pb;
    if (db < 0) db = 0;
    if (db > dv) db = dv; /* a run installed by another thread between our reads */
    an.v[st] += dv;
    an.b[st] += db;
    an.r[st] += r - an.pr;
  }
  an.pv = v;
  an.pr = r;
  an.pb = b;
}

void rv_an_push(int state) {
  if (!rv_tw_on || state < 0 || state >= RV_AN_STATES) return;
  if (an.depth == RV_AN_DEPTH) { an.over++; return; }
  an_mark();
  an.stack[an.depth++] = (uint8_t)an.state;
  an.state = state;
  an.n[state]++;
}

void rv_an_pop(int state) {
  if (!rv_tw_on) return;
  if (an.over) { an.over--; return; }
  /* Levels 0..depth: stack[i] for i < depth, the current state at depth. Level 0 is where the
   * thread began and is never popped; entries above the popped one go with it. */
  int i = an.depth;
  while (i >= 1 && (i == an.depth ? an.state : an.stack[i]) != state) i--;
  if (i < 1) return;
  an_mark();
  an.state = an.stack[i - 1];
  an.depth = i - 1;
}

static void an_reset(void) { memset(&an, 0, sizeof an); }

/* The names of rv_an_read's values (revati_anatomy_fields): the header fields before ';',
 * then the states, each as 4 values (virtual ns, GPU-busy ns within them, real ns, entries). */
const char *rv_an_fields(void) {
  return "now,real,cpu,cpu_frozen,gpu_busy,gpu_work,lost;run,runner,sched,idle,input,gpu,collective,sleep,poll,cond,"
         "sem,yield,sidecar,frozen";
}

/* The calling thread's cumulative counters (see rv_an_fields): now (virtual ns),
 * real (real ns), cpu (the thread's real CPU ns), cpu_frozen (of which inside JIT freezes,
 * whose virtual time is about nothing), gpu_busy (busy(now) of the process's GPU
 * timeline), gpu_work (predicted ns of all ops launched by the process so far), lost (pushes
 * beyond the stack's depth), then per state v, b, r, n. Returns the number of values written,
 * or -1 without the time warp. */
int rv_an_read(int64_t *out, int n) {
  if (!rv_tw_on || !out) return -1;
  an_mark();
  int64_t vals[7 + 4 * RV_AN_STATES];
  struct timespec ts;
  rv_real_clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  uint64_t work = 0;
  for (int i = 0; i < RV_OP_KINDS; i++) work += __atomic_load_n(&rv_global_stats.busy_ns[i], __ATOMIC_RELAXED);
  vals[0] = an.pv;
  vals[1] = an.pr;
  vals[2] = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
  vals[3] = an.cpu_frozen;
  vals[4] = an.pb;
  vals[5] = (int64_t)work;
  vals[6] = an.over;
  for (int s = 0; s < RV_AN_STATES; s++) {
    vals[7 + 4 * s] = an.v[s];
    vals[8 + 4 * s] = an.b[s];
    vals[9 + 4 * s] = an.r[s];
    vals[10 + 4 * s] = an.n[s];
  }
  int k = n < (int)(sizeof vals / sizeof vals[0]) ? n : (int)(sizeof vals / sizeof vals[0]);
  memcpy(out, vals, (size_t)k * sizeof *out);
  return k;
}

static int64_t an_thread_cpu(void) {
  struct timespec ts;
  rv_real_clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}


static int an_state_of(int kind) {
  switch (kind & 0xff) {
    case RV_WAIT_GPU: return RV_AN_GPU;
    case RV_WAIT_SLEEP: return RV_AN_SLEEP;
    case RV_WAIT_POLL: return RV_AN_POLL;
    case RV_WAIT_COND: return RV_AN_COND;
    case RV_WAIT_SEM: return RV_AN_SEM;
    default: return RV_AN_YIELD;
  }
}

/* ------------------------------------------------------------ messages */

/* "type, [int, int...]" into buf (cap bytes; 5 + 9 * n always fit). Returns its length. */
static size_t tw_msg(uint8_t *buf, size_t cap, int type, const int64_t *vals, size_t n) {
  rv_mp w = {buf, cap, 0};
  rv_mp_byte(&w, (uint8_t)type);
  rv_mp_array(&w, n);
  for (size_t i = 0; i < n; i++) rv_mp_int(&w, vals[i]);
  return w.n;
}

/* Parses "type, [int, int...]". Returns the type, or -1; fills up to max ints. */
static int tw_parse(const uint8_t *buf, size_t len, int64_t *vals, int max, int *n) {
  if (len < 2) return -1;
  *n = 0;
  int cnt;
  size_t k;
  if ((buf[1] & 0xf0) == 0x90) {
    cnt = buf[1] & 0x0f;
    k = 2;
  } else if (buf[1] == 0xdc && len >= 4) {
    cnt = (buf[2] << 8) | buf[3];
    k = 4;
  } else {
    return buf[0];
  }
  for (int i = 0; i < cnt && i < max; i++) {
    size_t used = rv_mp_read_int(buf + k, len - k, &vals[i]);
    if (!used) break;
    k += used;
    (*n)++;
  }
  return buf[0];
}

/* --------------------------------------------------------------- connection */

static void tw_send(int type, const int64_t *vals, int n) {
  uint8_t buf[64];
  size_t len = tw_msg(buf, sizeof buf, type, vals, (size_t)n);
  if (send(tw_fd, buf, len, MSG_NOSIGNAL) < 0 && !tw_lost) {
    tw_lost = 1;
    RV_LOG(RV_LOG_WARN, "timewarp: lost the Timekeeper (%s); virtual time now runs at real speed",
           strerror(errno));
  }
}

static void tw_close_locked_slot(void) {
  if (tw_slot >= 0) tw_fds[tw_slot] = -1;
  if (tw_fd >= 0) close(tw_fd);
  tw_fd = -1;
  tw_slot = -1;
}

static void tw_thread_exit(void *arg) {
  (void)arg;
  tw_close_locked_slot();
}

/* This thread's connection, opened and greeted on first use. -1 without a Timekeeper. */
static int tw_conn(void) {
  if (RV_LIKELY(tw_fd >= 0)) return tw_fd;
  if (tw_lost) return -1;
  rv_tw_guard++;
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  memcpy(a.sun_path, tw_sock_path, sizeof a.sun_path);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) goto fail;
  int64_t hello[3] = {RV_TW_PROTOCOL, getpid(), (int64_t)syscall(SYS_gettid)};
  uint8_t buf[256];
  size_t len = tw_msg(buf, sizeof buf, MSG_HELLO, hello, 3);
  if (send(fd, buf, len, MSG_NOSIGNAL) < 0) goto fail;
  struct pollfd p = {fd, POLLIN, 0};
  struct timespec ts = {5, 0};
  if (rv_real_ppoll(&p, 1, &ts, NULL) != 1) goto fail;
  ssize_t r = recv(fd, buf, sizeof buf, 0);
  int64_t v[2];
  int nv;
  if (r <= 0 || tw_parse(buf, (size_t)r, v, 2, &nv) != MSG_WELCOME || nv < 1 || v[0] != RV_TW_PROTOCOL) {
    RV_LOG(RV_LOG_ERROR, "timewarp: the Timekeeper refused the handshake (protocol %d)", RV_TW_PROTOCOL);
    goto fail;
  }
  int slot = -1;
  for (int i = 0; i < RV_TW_MAX_FDS; i++) {
    int expect = -1;
    if (__atomic_compare_exchange_n(&tw_fds[i], &expect, fd, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
      slot = i;
      break;
    }
  }
  tw_fd = fd;
  tw_slot = slot;
  pthread_setspecific(tw_key, (void *)1); /* closes the connection when the thread exits */
  rv_tw_guard--;
  return fd;
fail:
  if (!tw_lost) {
    tw_lost = 1;
    RV_LOG(RV_LOG_ERROR, "timewarp: cannot reach the Timekeeper at %s (%s); virtual time runs at "
                         "real speed", tw_sock_path, strerror(errno));
  }
  if (fd >= 0) close(fd);
  rv_tw_guard--;
  return -1;
}

/* Reads pending messages. Returns 1 if a WAKE for seq came, -1 on EOF. */
static int tw_drain(uint32_t seq) {
  int woke = 0;
  for (;;) {
    uint8_t buf[256];
    ssize_t r = recv(tw_fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r == 0) {
      if (!tw_lost) {
        tw_lost = 1;
        RV_LOG(RV_LOG_WARN, "timewarp: the Timekeeper closed the connection; virtual time now runs at real speed");
      }
      return -1;
    }
    if (r < 0) return woke;
    int64_t v[2];
    int nv;
    if (tw_parse(buf, (size_t)r, v, 2, &nv) == MSG_WAKE && nv >= 1 && (uint32_t)v[0] == seq) woke = 1;
  }
}

/* ------------------------------------------------------- condition-variable waker
 *
 * A thread in pthread_cond_*wait cannot also poll its Timekeeper socket. So one helper thread
 * per process (started on the first timed condition wait) polls the sockets of the threads
 * that wait on a condition variable; when the Timekeeper wakes one (the clock jumped to its
 * deadline), the helper broadcasts that condition variable under its mutex, which POSIX
 * allows (a spurious wake-up for the other waiters, who re-check their predicate). The waiter
 * thus waits in one real wait, with no slices that would keep it running. */
#define RV_TW_MAX_COND 256
static struct { _Atomic int fd; pthread_cond_t *c; pthread_mutex_t *m; pid_t tid; int fired; } tw_cw[RV_TW_MAX_COND];
static RV_TLS volatile sig_atomic_t tw_kicked;
static void tw_kick_handler(int sig) { (void)sig; tw_kicked = 1; }
static pthread_mutex_t tw_cw_lock = PTHREAD_MUTEX_INITIALIZER;
static int tw_cw_kick[2] = {-1, -1};
static int tw_cw_started;

static void *tw_cond_helper(void *arg) {
  (void)arg;
  rv_tw_guard++; /* the helper's own waits are real; it never joins the Timekeeper */
  struct pollfd p[RV_TW_MAX_COND + 1];
  int idx[RV_TW_MAX_COND + 1];
  for (;;) {
    int n = 0;
    p[n] = (struct pollfd){tw_cw_kick[0], POLLIN, 0};
    idx[n++] = -1;
    pthread_mutex_lock(&tw_cw_lock);
    for (int i = 0; i < RV_TW_MAX_COND; i++)
      if (tw_cw[i].fd >= 0 && !tw_cw[i].fired) {
        p[n] = (struct pollfd){tw_cw[i].fd, POLLIN, 0};
        idx[n++] = i;
      }
    pthread_mutex_unlock(&tw_cw_lock);
    if (rv_real_ppoll(p, (nfds_t)n, NULL, NULL) < 0) continue;
    if (p[0].revents) {
      char b[64];
      while (read(tw_cw_kick[0], b, sizeof b) > 0) continue;
    }
    for (int k = 1; k < n; k++) {
      if (!p[k].revents) continue;
      int i = idx[k];
      pthread_mutex_lock(&tw_cw_lock);
      int live = tw_cw[i].fd == p[k].fd && !tw_cw[i].fired;
      pthread_cond_t *c = tw_cw[i].c;
      pthread_mutex_t *m = tw_cw[i].m;
      pid_t tid = tw_cw[i].tid;
      if (live) tw_cw[i].fired = 1;
      /* A semaphore wait: interrupt it (EINTR) with the kick signal, under the table lock so
       * that no kick lands after the waiter unwatched. */
      if (live && !c) syscall(SYS_tgkill, getpid(), tid, RV_TW_KICK_SIG);
      pthread_mutex_unlock(&tw_cw_lock);
      if (!live || !c) continue;
      /* Under the waiter's mutex: the waiter registered while holding it, so it is inside
       * its wait by the time we get the mutex, and cannot miss this broadcast. */
      pthread_mutex_lock(m);
      pthread_cond_broadcast(c);
      pthread_mutex_unlock(m);
    }
  }
  return NULL;
}

static void tw_cw_start(void) {
  if (pipe2(tw_cw_kick, O_CLOEXEC | O_NONBLOCK) < 0) return;
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&a, 256 * 1024);
  pthread_t t;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* signals go to the program's own threads */
  if (pthread_create(&t, &a, tw_cond_helper, NULL) == 0) {
    pthread_setname_np(t, "revati-condwake");
    tw_cw_started = 1;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&a);
}

static int tw_kick_ok; /* the kick signal's handler is installed */

int rv_tw_kicked(void) {
  int k = tw_kicked;
  tw_kicked = 0;
  return k;
}

int rv_tw_sem_watch(void) {
  if (!tw_kick_ok) return -1;
  tw_kicked = 0;
  return rv_tw_cond_watch(NULL, NULL);
}

int rv_tw_cond_watch(pthread_cond_t *c, pthread_mutex_t *m) {
  if (tw_fd < 0) return -1;
  rv_tw_guard++;
  pthread_mutex_lock(&tw_cw_lock);
  if (!tw_cw_started) {
    for (int i = 0; i < RV_TW_MAX_COND; i++) tw_cw[i].fd = -1;
    tw_cw_start();
  }
  int slot = -1;
  if (tw_cw_started)
    for (int i = 0; i < RV_TW_MAX_COND; i++)
      if (tw_cw[i].fd < 0) {
        tw_cw[i].c = c;
        tw_cw[i].m = m;
        tw_cw[i].tid = (pid_t)syscall(SYS_gettid);
        tw_cw[i].fired = 0;
        tw_cw[i].fd = tw_fd;
        slot = i;
        break;
      }
  pthread_mutex_unlock(&tw_cw_lock);
  if (slot >= 0) {
    char b = 1;
    (void)!write(tw_cw_kick[1], &b, 1);
  }
  rv_tw_guard--;
  return slot;
}

void rv_tw_cond_unwatch(int slot) {
  if (slot < 0) return;
  pthread_mutex_lock(&tw_cw_lock);
  tw_cw[slot].fd = -1;
  pthread_mutex_unlock(&tw_cw_lock);
}

static void tw_atfork_child(void) {
  /* The helper thread did not survive the fork; the next condition wait starts another. */
  tw_cw_started = 0;
  pthread_mutex_init(&tw_cw_lock, NULL);
  if (tw_cw_kick[0] >= 0) { close(tw_cw_kick[0]); close(tw_cw_kick[1]); tw_cw_kick[0] = tw_cw_kick[1] = -1; }
  /* The parent's connections belong to the parent's threads: the child drops them all and
   * joins as a process of its own. */
  for (int i = 0; i < RV_TW_MAX_FDS; i++) {
    int fd = tw_fds[i];
    if (fd >= 0) { close(fd); tw_fds[i] = -1; }
  }
  tw_fd = -1;
  tw_slot = -1;
  tw_in_wait = 0;
  an_reset(); /* the forking thread's counters belong to the parent */
  tw_new_private_id();
  tw_conn();
}

void rv_timewarp_init(void) {
  const char *on = getenv("REVATI_TIMEWARP");
  if (!on || !*on || !strcmp(on, "0")) return;
  const char *path = getenv("REVATI_CLOCK");
  if (!path || !*path) {
    RV_LOG(RV_LOG_ERROR, "timewarp: REVATI_TIMEWARP=1 but REVATI_CLOCK is unset; the clock stays real");
    return;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  void *m = fd >= 0 ? mmap(NULL, RV_CLOCK_PAGE_SIZE, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
  if (fd >= 0) close(fd);
  if (m == MAP_FAILED) {
    RV_LOG(RV_LOG_ERROR, "timewarp: cannot map the clock page %s: %s; the clock stays real", path, strerror(errno));
    return;
  }
  const volatile rv_clock_page *p = m;
  if (p->magic != RV_CLOCK_MAGIC || p->layout_version != RV_CLOCK_LAYOUT_VERSION) {
    RV_LOG(RV_LOG_ERROR, "timewarp: %s is not a clock page of layout %u; the clock stays real", path,
           RV_CLOCK_LAYOUT_VERSION);
    munmap(m, RV_CLOCK_PAGE_SIZE);
    return;
  }
  const char *lazy = getenv("REVATI_TIMEWARP_LAZY");
  if (lazy) snprintf(tw_lazy, sizeof tw_lazy, "%s", lazy);
  for (size_t i = 0; i < sizeof tw_sock_path; i++) tw_sock_path[i] = p->sock_path[i];
  tw_sock_path[sizeof tw_sock_path - 1] = 0;
  rv_tw_realtime_delta = p->realtime_delta_ns;
  rv_tw_boottime_delta = p->boottime_delta_ns;
  for (int i = 0; i < RV_TW_MAX_FDS; i++) tw_fds[i] = -1;
  pthread_key_create(&tw_key, tw_thread_exit);
  struct sigaction old_sa, sa = {.sa_handler = tw_kick_handler}; /* no SA_RESTART: waits see EINTR */
  if (sigaction(RV_TW_KICK_SIG, NULL, &old_sa) == 0 && old_sa.sa_handler == SIG_DFL &&
      sigaction(RV_TW_KICK_SIG, &sa, NULL) == 0)
    tw_kick_ok = 1;
  pthread_atfork(NULL, NULL, tw_atfork_child);
  tw_page = p;
  tw_new_private_id();
  rv_tw_on = 1;
  tw_conn(); /* the process joins at load: its initial thread is an actor from now on */
  RV_LOG(RV_LOG_INFO, "timewarp: on, clock page %s, Timekeeper %s", path, tw_sock_path);
}

/* -------------------------------------------------------------------- waits */

static RV_TLS uint32_t tw_spin_seq; /* the announced yield-spin, 0 when none */
static RV_TLS int tw_wait_state;     /* the anatomy state of the announced wait in progress */
static RV_TLS uint32_t tw_yields;   /* yields since the thread last did anything else we see */
#define RV_TW_SPIN_YIELDS 8
/* Each yield of a spin sleeps 50 us, doubling up to 500 us: several spinners on a loaded host
 * must be idle (not runnable) when the Timekeeper samples, yet notice a write quickly. */
#define RV_TW_SPIN_SLEEP_NS 50000
#define RV_TW_SPIN_SLEEP_MAX_NS 500000
static RV_TLS int64_t tw_spin_sleep;

void rv_tw_unspin(void) {
  tw_yields = 0;
  tw_spin_sleep = 0;
  if (RV_LIKELY(!tw_spin_seq)) return;
  int64_t msg[1] = {tw_spin_seq};
  tw_spin_seq = 0;
  rv_an_pop(RV_AN_YIELD);
  tw_send(MSG_RUN, msg, 1);
}

void rv_tw_yield(void) {
  if (!tw_spin_seq && !tw_in_wait && ++tw_yields >= RV_TW_SPIN_YIELDS && tw_conn() >= 0) {
    tw_drain(0);
    uint32_t seq = ++tw_seq;
    if (!seq) seq = ++tw_seq;
    int64_t msg[3] = {seq, -1, RV_WAIT_YIELD};
    tw_send(MSG_WAIT, msg, 3);
    tw_spin_seq = seq;
    rv_an_push(RV_AN_YIELD);
  }
  if (tw_spin_seq) {
    tw_spin_sleep = tw_spin_sleep ? tw_spin_sleep * 2 : RV_TW_SPIN_SLEEP_NS;
    if (tw_spin_sleep > RV_TW_SPIN_SLEEP_MAX_NS) tw_spin_sleep = RV_TW_SPIN_SLEEP_MAX_NS;
    struct timespec ts = {0, tw_spin_sleep};
    rv_real_ppoll(NULL, 0, &ts, NULL);
  } else {
    syscall(SYS_sched_yield);
  }
}

uint32_t rv_tw_wait_begin(int64_t deadline, int kind) {
  rv_tw_unspin();
  if (tw_in_wait || tw_conn() < 0) return 0;
  tw_in_wait = 1;
  tw_drain(0);
  uint32_t seq = ++tw_seq;
  if (!seq) seq = ++tw_seq;
  int64_t msg[3] = {seq, deadline, kind};
  tw_send(MSG_WAIT, msg, 3);
  tw_wait_state = an_state_of(kind);
  rv_an_push(tw_wait_state);
  return seq;
}

void rv_tw_wait_end(uint32_t seq) {
  if (!seq) return;
  rv_an_pop(tw_wait_state);
  int64_t msg[1] = {seq};
  tw_send(MSG_RUN, msg, 1);
  tw_in_wait = 0;
}

static void ns_to_ts(int64_t ns, struct timespec *ts) {
  if (ns < 0) ns = 0;
  ts->tv_sec = ns / 1000000000LL;
  ts->tv_nsec = ns % 1000000000LL;
}

/* Threads whose poll timeouts are only idle ticks (REVATI_TIMEWARP_LAZY: comma-separated
 * thread-name prefixes; default gloo_tcp_loop, gloo's TCP loop, which wakes every 10 ms only
 * to notice its own shutdown). Their deadlines are announced as lazy: the Timekeeper never
 * jumps to one while another deadline is pending, and wakes them at the jump that passes them.
 * NOTE: this coalesces those ticks in virtual time; fd events still wake them at once. */
static int tw_thread_is_lazy(void) {
  if (!tw_lazy[0]) return 0;
  char name[17] = {0};
  if (prctl(PR_GET_NAME, name, 0, 0, 0) != 0) return 0;
  for (const char *p = tw_lazy; *p;) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len && strncmp(name, p, len) == 0) return 1;
    if (!e) break;
    p = e + 1;
  }
  return 0;
}

int rv_tw_poll_until(struct pollfd *fds, nfds_t n, int64_t deadline, const sigset_t *sigmask, int kind) {
  rv_tw_unspin();
  if (deadline < 0) return rv_real_ppoll(fds, n, NULL, sigmask);
  if (kind == RV_WAIT_POLL && tw_thread_is_lazy()) kind |= RV_WAIT_LAZY;
  /* NOTE: a thread blocked with no deadline needs no announcement: the Timekeeper sees it
   * sleeping in /proc, which is all that quiescence asks of it. */
  struct timespec zero = {0, 0};
  if (rv_tw_now() >= deadline) return rv_real_ppoll(fds, n, &zero, sigmask);
  uint32_t seq = rv_tw_wait_begin(deadline, kind);
  struct pollfd stack[17], *all = n + 1 <= 17 ? stack : malloc((n + 1) * sizeof *all);
  if (!all) { errno = ENOMEM; rv_tw_wait_end(seq); return -1; }
  if (n) memcpy(all, fds, n * sizeof *all);
  int tk = seq ? tw_fd : -1;
  all[n] = (struct pollfd){tk, POLLIN, 0}; /* a negative fd is ignored by ppoll */
  int r, woke = 0;
  for (;;) {
    int64_t left = deadline - rv_tw_now();
    if (left <= 0) {
      r = rv_real_ppoll(all, n, &zero, sigmask);
      break;
    }
    struct timespec ts;
    ns_to_ts(rv_tw_real_span(left), &ts);
    r = rv_real_ppoll(all, n + 1, &ts, sigmask);
    if (r < 0) break;
    if (all[n].revents) {
      r--;
      all[n].revents = 0;
      int d = tw_drain(seq);
      if (d < 0) all[n].fd = -1; /* the Timekeeper is gone: the deadline comes in real time */
      else if (d > 0) woke = 1;
    }
    if (r > 0) break;
    /* On a wake the clock has already jumped: the next pass sees left <= 0. */
  }
  if (n) {
    int e = errno;
    memcpy(fds, all, n * sizeof *all);
    errno = e;
  }
  if (all != stack) free(all);
  if (woke) { /* the Timekeeper marked us RUNNING when it woke us */
    tw_in_wait = 0;
    rv_an_pop(tw_wait_state);
  } else {
    int e = errno;
    rv_tw_wait_end(seq);
    errno = e;
  }
  return r;
}

/* -------------------------------------------------------------- collectives */

uint64_t rv_tw_private_id(void) { return tw_private; }

static void tw_new_private_id(void) {
  uint64_t id = 0;
  if (getrandom(&id, sizeof id, 0) != sizeof id) id = ((uint64_t)getpid() << 32) ^ (uint64_t)rv_tw_real_mono();
  tw_private = id | 1; /* never 0 */
}

static int tw_send_long(int type, const int64_t *vals, size_t n) {
  uint8_t stack[1024], *buf = 5 + 9 * n <= sizeof stack ? stack : malloc(5 + 9 * n);
  if (!buf) return -1;
  size_t len = tw_msg(buf, 5 + 9 * n, type, vals, n);
  int r = 0;
  if (send(tw_fd, buf, len, MSG_NOSIGNAL) < 0) {
    r = -1;
    if (!tw_lost) {
      tw_lost = 1;
      RV_LOG(RV_LOG_WARN, "timewarp: lost the Timekeeper (%s); virtual time now runs at real speed",
             strerror(errno));
    }
  }
  if (buf != stack) free(buf);
  return r;
}

/* Holds (+1) or releases (-1) the deployment's clock around the shim's own work inside an
 * emulated thread: a prediction sidecar round trip. The Timekeeper stops the clock and does not
 * jump while a hold is in force: the thread waits in a real (guarded) poll that /proc shows as
 * idle, and without the hold the clock would jump across the reply to another thread's timer.
 * Returns 0, or -1 without a Timekeeper (then do not release). */
int rv_tw_hold(int delta) {
  if (!rv_tw_on || (delta != 1 && delta != -1) || tw_conn() < 0) return -1;
  int64_t v[2] = {delta, 1};
  return tw_send_long(MSG_FREEZE, v, 2);
}

/* Stops (+1) or restarts (-1) the deployment's virtual clock around one-off work that a
 * warmed-up server would not do, such as a Triton kernel's first-use JIT compile (the vLLM
 * plugin calls this through revati_clock_freeze). Nests per process; the Timekeeper undoes what
 * a process that exits left frozen. Returns 0, or -1 without a Timekeeper. */
int rv_tw_freeze(int delta) {
  if (!rv_tw_on || (delta != 1 && delta != -1) || tw_conn() < 0) return -1;
  int64_t v[1] = {delta};
  rv_tw_unspin(); /* a compile begins, or it is over: either way no spin goes on */
  if (delta < 0 && an.freezes > 0 && --an.freezes == 0) { /* nested freezes: the outermost counts */
    rv_an_pop(RV_AN_FROZEN);
    an.cpu_frozen += an_thread_cpu() - an.cpu_at_freeze;
  }
  int r = tw_send_long(MSG_FREEZE, v, 1);
  if (delta > 0 && r == 0 && an.freezes++ == 0) {
    rv_an_push(RV_AN_FROZEN);
    an.cpu_at_freeze = an_thread_cpu();
  }
  return r;
}

int rv_tw_comm(uint64_t comm, int nranks, int rank) {
  if (!rv_tw_on || tw_conn() < 0) return -1;
  int64_t v[3] = {(int64_t)comm, nranks, rank};
  return tw_send_long(MSG_COMM, v, 3);
}

/* Arrivals go in messages of at most about 16 KB, split between arrivals. */
#define RV_TW_ARRIVE_CHUNK 1800
int rv_tw_arrive(const int64_t *vals, size_t n) {
  if (!rv_tw_on || tw_conn() < 0) return -1;
  int64_t stack[1 + RV_TW_ARRIVE_CHUNK + 9 + 4 * 64];
  size_t i = 0;
  while (i < n) {
    size_t k = 1, count = 0;
    while (i < n) {
      size_t len = 9 + 4 * (size_t)vals[i + 8];
      if (count && k + len > 1 + RV_TW_ARRIVE_CHUNK) break;
      if (len > sizeof stack / sizeof stack[0] - k) return -1; /* cannot happen: refs are few */
      memcpy(stack + k, vals + i, len * sizeof *vals);
      k += len;
      i += len;
      count++;
    }
    stack[0] = (int64_t)count;
    if (tw_send_long(MSG_ARRIVE, stack, k) < 0) return -1;
  }
  return 0;
}

static int tw_resolve_reply(uint32_t req, int n, int64_t *ends);

int rv_tw_resolve(const rv_ckey *keys, int n, int wait, int64_t *ends) {
  if (!rv_tw_on || n <= 0 || n > 64 || tw_conn() < 0) return -1;
  int64_t v[2 + 3 * 64];
  uint32_t req = ++tw_req;
  v[0] = req;
  v[1] = wait;
  for (int i = 0; i < n; i++) {
    v[2 + 3 * i] = (int64_t)keys[i].comm;
    v[3 + 3 * i] = (int64_t)keys[i].chan;
    v[4 + 3 * i] = (int64_t)keys[i].seq;
  }
  if (tw_send_long(MSG_RESOLVE, v, 2 + 3 * (size_t)n) < 0) return -1;
  rv_an_push(RV_AN_COLL);
  int rc = tw_resolve_reply(req, n, ends);
  rv_an_pop(RV_AN_COLL);
  return rc;
}

/* Waits for the RESOLVED answer to req. */
static int tw_resolve_reply(uint32_t req, int n, int64_t *ends) {
  /* NOTE: the thread blocks here with no virtual deadline: to the Timekeeper it is idle, like
   * a thread in a futex, until the last rank arrives and the reply wakes it. */
  for (;;) {
    struct pollfd p = {tw_fd, POLLIN, 0};
    if (rv_real_ppoll(&p, 1, NULL, NULL) < 0) continue; /* EINTR */
    for (;;) {
      uint8_t buf[1024];
      ssize_t r = recv(tw_fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        if (!tw_lost) {
          tw_lost = 1;
          RV_LOG(RV_LOG_WARN, "timewarp: the Timekeeper closed the connection; virtual time now runs at real speed");
        }
        return -1;
      }
      if (r < 0) break;
      int64_t got[1 + 64];
      int nv;
      if (tw_parse(buf, (size_t)r, got, 1 + 64, &nv) != MSG_RESOLVED || nv < 1 + n || (uint32_t)got[0] != req)
        continue; /* a stale WAKE */
      int unresolved = 0;
      for (int i = 0; i < n; i++) {
        ends[i] = got[1 + i];
        if (ends[i] < 0) unresolved++;
      }
      return unresolved;
    }
  }
}
