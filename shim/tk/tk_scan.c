/* The Timekeeper's /proc scan, in C (declared in shim/src/revati_api.h, bound by
 * revati/launch/shim_api.py; the Python reader is the fallback). One call reads the scheduler state and the run count
 * (schedstat's timeslices) of every thread of the given processes, through /proc files kept
 * open between calls, and stops at the first thread that is not idle.
 *
 *   int64_t rv_tk_scan(const int32_t *pids, int npids, int64_t *out, int64_t cap)
 *
 * out gets 3 int64 per thread: pid, tid, runs. Returns the thread count, -1 when a thread is
 * runnable (or in D/T state), or -2 when cap is too small. Not thread-safe: one caller.
 *
 *   int rv_tk_quiet(const int32_t *pids, int npids, const int32_t *exempt, int nexempt)
 *
 * The Timekeeper's quiescence test in one call: -1 when a thread is not idle (nothing is
 * recorded), else compares every thread's run count with the last idle scan and records this
 * one: 0 when no thread outside exempt (the WAITING actors) got a CPU in between, 1 when one
 * did or a thread is new.
 *
 *   void rv_tk_counters(int64_t out[4])
 *
 * What rv_tk_quiet did so far: its calls, the ones decided by a counts-only sample (the NOTE
 * below), the busy ones decided by the ring of recently busy threads, and the thread states read.
 *
 * NOTE: rv_tk_quiet lists a process's threads (readdir of /proc/PID/task) only when its thread
 * set may have changed: the link count of that folder (2 + live threads, from fstat of an fd
 * kept open) moved, or one of the threads listed last time is gone (its read fails). With the
 * same count and none gone, no thread was created either, so the last list is the thread set.
 * The folder's count is read before its listing: a thread created in between shows as a
 * changed count at the next scan.
 *
 * NOTE: the counts-only sample (quiet_counts). Reading a thread's scheduler state (its stat
 * file, about 2.5 us of kernel formatting) is most of a scan's cost; its run count (schedstat,
 * 0.5 us) is not. When the host's run queues hold nothing but the caller (/proc/loadavg's
 * running count is 1, read at one instant for every CPU), no thread of the deployment is
 * runnable, and a sample needs only the run counts: a thread that has entered D or T since the
 * last sample that read every state must have been switched in to do so, and then its run count
 * moved. So the counts-only sample is taken only after a sample that read every state (full_base),
 * reads the state of each thread whose count moved (one that is busy makes the sample busy), and is
 * never taken where the running count cannot be trusted: a /proc/loadavg that is its own mount (lxcfs computes it every few
 * seconds), or run counts that do not move (a kernel without scheduler statistics).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "revati_api.h"

#define CAP 8192 /* open-addressing table of cached fds, by tid */
static struct { int32_t tid, pid, stat_fd, sched_fd; uint32_t gen, seen; int64_t runs, cur; } tab[CAP];
static uint32_t gen;
static int ready;

/* rv_tk_quiet's processes: the task folder's fd, its link count at the last listing, and the
 * table slots of the threads that listing found. */
#define PCAP 64
#define MAXT 4096
static struct {
  int32_t pid;
  int dirfd, valid, n;
  uint32_t gen;
  uint64_t nlink;
  int slots[MAXT];
  int32_t tids[MAXT];
} procs[PCAP];
/* The threads found busy by recent scans, most recent first (see busy_again): table slots and
 * their tids (a slot is reused when its thread is gone). */
#define RING 8
static int ring_k[RING], ring_tid[RING], ring_n;

/* rv_tk_counters: samples (rv_tk_quiet calls), counts-only samples that decided, busy samples
 * decided by the ring, thread states read. */
static int64_t n_samples, n_counts, n_ring, n_states;

static int full_base; /* the recorded counts come from a sample that read every thread's state */
static int loadavg_fd = -2; /* -2 not opened yet, -1 not to be trusted */

static int slot_of(int32_t tid, int create) {
  uint32_t h = (uint32_t)tid * 2654435761u;
  int free_k = -1;
  for (int i = 0; i < CAP; i++) {
    int k = (int)((h + (uint32_t)i) & (CAP - 1));
    if (tab[k].tid == tid) return k;
    if (tab[k].tid == -1 && free_k < 0) free_k = k; /* a tombstone: reusable */
    if (tab[k].tid == 0) {
      if (free_k < 0) free_k = k;
      break;
    }
  }
  if (!create || free_k < 0) return -1;
  tab[free_k].tid = tid;
  tab[free_k].stat_fd = tab[free_k].sched_fd = -1;
  tab[free_k].seen = 0;
  return free_k;
}

static void drop(int k) {
  if (tab[k].stat_fd >= 0) close(tab[k].stat_fd);
  if (tab[k].sched_fd >= 0) close(tab[k].sched_fd);
  tab[k].stat_fd = tab[k].sched_fd = -1;
  tab[k].tid = -1; /* tombstone */
}

/* The scheduler state of thread k: 0 idle, 1 busy, -1 gone. */
static int read_state(int k) {
  char buf[1024];
  n_states++;
  ssize_t n = pread(tab[k].stat_fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p || p[1] != ' ') return -1;
  char st = p[2];
  return (st == 'S' || st == 'I' || st == 'Z' || st == 'X') ? 0 : 1;
}

/* The run count (schedstat's third field: timeslices) from an open schedstat file, or -1. */
static int64_t read_runs(int fd) {
  char buf[128];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *q = buf;
  strtoll(q, &q, 10);
  strtoll(q, &q, 10);
  return strtoll(q, &q, 10);
}

/* 0 idle, 1 busy, -1 gone; runs gets the run count of an idle thread. */
static int read_thread(int k, int64_t *runs) {
  int r = read_state(k);
  if (r != 0) return r;
  *runs = read_runs(tab[k].sched_fd);
  return *runs < 0 ? -1 : 0;
}

int64_t rv_tk_scan(const int32_t *pids, int npids, int64_t *out, int64_t cap) {
  if (!ready) {
    for (int i = 0; i < CAP; i++) tab[i].tid = 0;
    ready = 1;
  }
  gen++;
  int64_t cnt = 0, rc = 0;
  char path[96];
  for (int i = 0; i < npids && rc == 0; i++) {
    snprintf(path, sizeof path, "/proc/%d/task", pids[i]);
    DIR *d = opendir(path);
    if (!d) continue;
    struct dirent *e;
    while ((e = readdir(d))) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      int32_t tid = (int32_t)atoi(e->d_name);
      int k = slot_of(tid, 1);
      if (k < 0) { rc = -2; break; }
      if (tab[k].stat_fd < 0 || tab[k].pid != pids[i]) {
        if (tab[k].stat_fd >= 0) { close(tab[k].stat_fd); close(tab[k].sched_fd); }
        tab[k].pid = pids[i];
        snprintf(path, sizeof path, "/proc/%d/task/%d/stat", pids[i], tid);
        tab[k].stat_fd = open(path, O_RDONLY | O_CLOEXEC);
        snprintf(path, sizeof path, "/proc/%d/task/%d/schedstat", pids[i], tid);
        tab[k].sched_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (tab[k].stat_fd < 0 || tab[k].sched_fd < 0) { drop(k); continue; }
      }
      tab[k].gen = gen;
      int64_t runs = 0;
      int r = read_thread(k, &runs);
      if (r < 0) { drop(k); continue; }
      if (r > 0) { rc = -1; break; }
      if (cnt >= cap) { rc = -2; break; }
      out[3 * cnt] = pids[i];
      out[3 * cnt + 1] = tid;
      out[3 * cnt + 2] = runs;
      cnt++;
    }
    closedir(d);
  }
  if (rc) return rc;
  for (int k = 0; k < CAP; k++) /* threads that are gone */
    if (tab[k].tid > 0 && tab[k].gen != gen) drop(k);
  return cnt;
}

static void proc_drop(int pi) {
  if (procs[pi].dirfd >= 0) close(procs[pi].dirfd);
  procs[pi].dirfd = -1;
  procs[pi].pid = 0;
  procs[pi].valid = 0;
}

static int proc_of(int32_t pid) {
  int free_i = -1;
  for (int i = 0; i < PCAP; i++) {
    if (procs[i].pid == pid) return i;
    if (procs[i].pid == 0 && free_i < 0) free_i = i;
  }
  if (free_i < 0) return -1;
  procs[free_i].pid = pid;
  procs[free_i].dirfd = -1;
  procs[free_i].valid = 0;
  return free_i;
}

/* Thread k was found busy: it goes to the front of the ring. */
static void ring_push(int k) {
  int i = 0;
  while (i < ring_n && ring_k[i] != k) i++;
  if (i == ring_n && ring_n < RING) ring_n++;
  if (i == RING) i = RING - 1; /* full: the oldest drops out */
  for (; i > 0; i--) { ring_k[i] = ring_k[i - 1]; ring_tid[i] = ring_tid[i - 1]; }
  ring_k[0] = k;
  ring_tid[0] = tab[k].tid;
}

/* The threads found busy by recent scans, read first (their state only): a busy deployment is
 * usually busy in one of a few threads (the engine core's loop, the API server's, the load
 * generator's), and a scan stops at the first busy thread. A read that finds one busy is all
 * that a busy sample costs; 1 then. */
static int busy_again(const int32_t *pids, int npids) {
  for (int r = 0; r < ring_n; r++) {
    int k = ring_k[r];
    if (tab[k].tid != ring_tid[r] || tab[k].stat_fd < 0) continue; /* gone; its slot reused */
    int asked = 0; /* only a process of this call counts */
    for (int i = 0; i < npids && !asked; i++) asked = pids[i] == tab[k].pid;
    if (asked && read_state(k) > 0) {
      ring_push(k);
      return 1;
    }
  }
  return 0;
}

/* Whether process pi's thread list may still be its thread set: its task folder's link count
 * did not move (see the NOTE at the top). */
static int list_current(int pi) {
  struct stat st;
  return procs[pi].valid && procs[pi].dirfd >= 0 && fstat(procs[pi].dirfd, &st) == 0 &&
         (uint64_t)st.st_nlink == procs[pi].nlink;
}

/* The threads listed last time, read again: 1 all idle, -1 one is busy, 0 the list may be stale. */
static int quiet_fast(int pi) {
  if (!list_current(pi)) return 0;
  for (int j = 0; j < procs[pi].n; j++) {
    int k = procs[pi].slots[j];
    if (tab[k].tid != procs[pi].tids[j] || tab[k].pid != procs[pi].pid || tab[k].stat_fd < 0) return 0;
    tab[k].gen = gen;
    int r = read_thread(k, &tab[k].cur);
    if (r < 0) return 0;
    if (r > 0) {
      ring_push(k);
      return -1;
    }
  }
  return 1;
}

/* Lists the threads of process pid (slot pi) and reads them: 1 all idle, -1 one is busy, -2 the
 * table is full. The list is kept (valid) only when it is complete. */
static int quiet_list(int pi, int32_t pid) {
  char path[96];
  procs[pi].valid = 0;
  procs[pi].n = 0;
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  if (procs[pi].dirfd < 0) procs[pi].dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  struct stat st;
  int counted = procs[pi].dirfd >= 0 && fstat(procs[pi].dirfd, &st) == 0; /* before the listing */
  DIR *d = opendir(path);
  if (!d) return 1;
  struct dirent *e;
  int listed = 1;
  while ((e = readdir(d))) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    int32_t tid = (int32_t)atoi(e->d_name);
    int k = slot_of(tid, 1);
    if (k < 0) { closedir(d); return -2; }
    if (tab[k].stat_fd < 0 || tab[k].pid != pid) {
      if (tab[k].stat_fd >= 0) { close(tab[k].stat_fd); close(tab[k].sched_fd); }
      tab[k].pid = pid;
      tab[k].seen = 0;
      snprintf(path, sizeof path, "/proc/%d/task/%d/stat", pid, tid);
      tab[k].stat_fd = open(path, O_RDONLY | O_CLOEXEC);
      snprintf(path, sizeof path, "/proc/%d/task/%d/schedstat", pid, tid);
      tab[k].sched_fd = open(path, O_RDONLY | O_CLOEXEC);
      if (tab[k].stat_fd < 0 || tab[k].sched_fd < 0) { drop(k); listed = 0; continue; }
    }
    tab[k].gen = gen;
    int r = read_thread(k, &tab[k].cur);
    if (r < 0) { drop(k); listed = 0; continue; }
    if (r > 0) {
      ring_push(k);
      closedir(d);
      return -1;
    }
    if (procs[pi].n < MAXT) {
      procs[pi].slots[procs[pi].n] = k;
      procs[pi].tids[procs[pi].n++] = tid;
    } else {
      listed = 0;
    }
  }
  closedir(d);
  if (counted && listed) {
    procs[pi].nlink = (uint64_t)st.st_nlink;
    procs[pi].valid = 1;
  }
  return 1;
}

/* Whether /proc/loadavg's running count may be trusted: it is not a mount of its own, and
 * this thread's run count moves (scheduler statistics are on). */
static int loadavg_trusted(void) {
  FILE *f = fopen("/proc/self/mountinfo", "r");
  if (!f) return 0;
  char line[1024];
  int own = 0;
  while (!own && fgets(line, sizeof line, f)) {
    char *a = strchr(line, ' '), *b = a ? strchr(a + 1, ' ') : NULL, *c = b ? strchr(b + 1, ' ') : NULL;
    char *d = c ? strchr(c + 1, ' ') : NULL; /* mount point: the 5th field */
    if (d && strncmp(d + 1, "/proc/loadavg ", 14) == 0) own = 1;
  }
  fclose(f);
  if (own) return 0;
  int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  int64_t runs = read_runs(fd);
  close(fd);
  return runs > 0;
}

/* The host's runnable threads now (the caller is one), or -1 when unknown or not trusted. */
static int host_running(void) {
  if (loadavg_fd == -2) loadavg_fd = loadavg_trusted() ? open("/proc/loadavg", O_RDONLY | O_CLOEXEC) : -1;
  if (loadavg_fd < 0) return -1;
  char buf[128];
  ssize_t n = pread(loadavg_fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *p = buf; /* "0.12 0.10 0.05 1/345 6789" */
  for (int f = 0; f < 3 && p; f++) p = strchr(p + 1, ' ');
  if (!p) return -1;
  char *e;
  long r = strtol(p + 1, &e, 10);
  return (e == p + 1 || *e != '/') ? -1 : (int)r;
}

/* The run counts of the threads listed last time (into cur): 1 read, 0 the list may be stale. */
static int counts_fast(int pi) {
  if (!list_current(pi)) return 0;
  for (int j = 0; j < procs[pi].n; j++) {
    int k = procs[pi].slots[j];
    if (tab[k].tid != procs[pi].tids[j] || tab[k].pid != procs[pi].pid || tab[k].sched_fd < 0) return 0;
    if ((tab[k].cur = read_runs(tab[k].sched_fd)) < 0) return 0;
    tab[k].gen = gen;
  }
  return 1;
}

static int is_exempt(int32_t tid, const int32_t *exempt, int nexempt) {
  for (int j = 0; j < nexempt; j++)
    if (exempt[j] == tid) return 1;
  return 0;
}

/* The counts-only sample (see the NOTE at the top): 0 or 1 as rv_tk_quiet, -1 busy, -3 not
 * possible (a process's thread list may be stale, or one it asks about is not recorded). */
static int quiet_counts(const int32_t *pids, int npids, const int32_t *exempt, int nexempt) {
  for (int i = 0; i < npids; i++) {
    int pi = -1;
    for (int q = 0; q < PCAP && pi < 0; q++)
      if (procs[q].pid == pids[i]) pi = q;
    if (pi < 0 || !counts_fast(pi)) return -3;
  }
  int ran = 0;
  for (int k = 0; k < CAP; k++) {
    if (tab[k].tid <= 0 || tab[k].gen != gen) continue;
    if (!tab[k].seen) return -3;
    if (tab[k].cur == tab[k].runs) continue;
    int r = read_state(k); /* it was switched in since the last sample: it may be in D or T now */
    if (r < 0) return -3;
    if (r > 0) {
      ring_push(k);
      return -1;
    }
    if (!is_exempt(tab[k].tid, exempt, nexempt)) ran = 1;
  }
  for (int i = 0; i < npids; i++)
    for (int q = 0; q < PCAP; q++)
      if (procs[q].pid == pids[i]) procs[q].gen = gen;
  for (int k = 0; k < CAP; k++)
    if (tab[k].tid > 0 && tab[k].gen == gen) tab[k].runs = tab[k].cur;
  return ran;
}

int rv_tk_quiet(const int32_t *pids, int npids, const int32_t *exempt, int nexempt) {
  if (!ready) {
    for (int i = 0; i < CAP; i++) tab[i].tid = 0;
    ready = 1;
  }
  static int procs_ready;
  if (!procs_ready) {
    for (int i = 0; i < PCAP; i++) { procs[i].pid = 0; procs[i].dirfd = -1; }
    procs_ready = 1;
  }
  gen++;
  n_samples++;
  if (full_base && host_running() == 1) {
    int r = quiet_counts(pids, npids, exempt, nexempt);
    if (r != -3) {
      n_counts++;
      return r;
    }
  }
  if (busy_again(pids, npids)) {
    n_ring++;
    return -1;
  }
  for (int i = 0; i < npids; i++) {
    int pi = proc_of(pids[i]);
    if (pi < 0) return 1; /* more processes than the table holds: never quiet */
    int r = quiet_fast(pi);
    if (r == 0) r = quiet_list(pi, pids[i]);
    if (r == -2) return 1;
    if (r < 0) return -1;
    procs[pi].gen = gen;
  }
  for (int i = 0; i < PCAP; i++) /* processes no longer asked about */
    if (procs[i].pid && procs[i].gen != gen) proc_drop(i);
  int ran = 0;
  for (int k = 0; k < CAP; k++) {
    if (tab[k].tid <= 0) continue;
    if (tab[k].gen != gen) { drop(k); continue; }
    if (!tab[k].seen || tab[k].cur != tab[k].runs) {
      int ex = 0;
      for (int j = 0; j < nexempt; j++)
        if (exempt[j] == tab[k].tid) { ex = 1; break; }
      if (!ex) ran = 1;
    }
    tab[k].runs = tab[k].cur;
    tab[k].seen = 1;
  }
  full_base = 1;
  return ran;
}

void rv_tk_counters(int64_t *out) {
  out[0] = n_samples;
  out[1] = n_counts;
  out[2] = n_ring;
  out[3] = n_states;
}
