/* Split-state device memory.
 *
 * Each virtual device gets one MAP_NORESERVE address-space reservation, twice its capacity,
 * created on first use: addresses are real and readable, and untouched pages cost no RAM.
 * Capacity is accounted separately, so out-of-memory happens exactly where a device of the
 * catalog size would fail.
 *
 * Allocations up to REVATI_BACKED_MAX bytes (64 MiB by default) are "backed": copies and
 * memsets into them are performed for real, so control data (token ids, block tables,
 * positions) round-trips exactly. Larger allocations (weights, KV cache) are "bulk": copies
 * into them are dropped, so they never touch a page. Reads from bulk memory see zeros.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shim.h"

typedef struct {
  uintptr_t off;
  size_t size;
} rv_range;

typedef struct {
  uint8_t *base;       /* NULL until first allocation */
  size_t reserve;
  rv_range *free;      /* sorted by offset, coalesced */
  size_t nfree, capfree;
} rv_arena;

static rv_arena rv_arenas[RV_MAX_DEVICES];
static rv_alloc_info *rv_live;  /* sorted by base: device and pinned/registered host memory */
static size_t rv_nlive, rv_caplive;
static size_t rv_backed_max = 64ULL << 20;

void rv_memory_init(void) {
  const char *m = getenv("REVATI_BACKED_MAX");
  if (m) rv_backed_max = strtoull(m, NULL, 10);
}

static size_t align_up(size_t v, size_t a) { return (v + a - 1) & ~(a - 1); }

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (!q) { rv_log(RV_LOG_ERROR, "host out of memory"); abort(); }
  return q;
}

static size_t live_lower_bound(uintptr_t addr) {
  size_t lo = 0, hi = rv_nlive;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (rv_live[mid].base < addr) lo = mid + 1; else hi = mid;
  }
  return lo;
}

static void live_insert(const rv_alloc_info *a) {
  if (rv_nlive == rv_caplive) {
    rv_caplive = rv_caplive ? rv_caplive * 2 : 256;
    rv_live = xrealloc(rv_live, rv_caplive * sizeof *rv_live);
  }
  size_t i = live_lower_bound(a->base);
  memmove(&rv_live[i + 1], &rv_live[i], (rv_nlive - i) * sizeof *rv_live);
  rv_live[i] = *a;
  rv_nlive++;
}

static int live_remove(uintptr_t base, rv_alloc_info *out) {
  size_t i = live_lower_bound(base);
  if (i >= rv_nlive || rv_live[i].base != base) return -1;
  if (out) *out = rv_live[i];
  memmove(&rv_live[i], &rv_live[i + 1], (rv_nlive - i - 1) * sizeof *rv_live);
  rv_nlive--;
  return 0;
}

static int live_find(uintptr_t p, rv_alloc_info *out) {
  size_t i = live_lower_bound(p + 1);
  if (i == 0) return 0;
  const rv_alloc_info *a = &rv_live[i - 1];
  if (p >= a->base && p < a->base + (a->size ? a->size : 1)) {
    if (out) *out = *a;
    return a->kind;
  }
  return 0;
}

static int arena_ready(int dev) {
  rv_arena *a = &rv_arenas[dev];
  if (a->base) return 0;
  a->reserve = align_up(rv_devices[dev].spec->memory_bytes * 2, 1ULL << 30);
  void *p = mmap(NULL, a->reserve, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    rv_log(RV_LOG_ERROR, "cannot reserve %zu bytes of address space for device %d", a->reserve, dev);
    return -1;
  }
  a->base = p;
  a->capfree = 64;
  a->free = xrealloc(NULL, a->capfree * sizeof *a->free);
  a->free[0] = (rv_range){0, a->reserve};
  a->nfree = 1;
  return 0;
}

static void arena_release(rv_arena *a, uintptr_t off, size_t size) {
  size_t i = 0;
  while (i < a->nfree && a->free[i].off < off) i++;
  if (a->nfree == a->capfree) {
    a->capfree *= 2;
    a->free = xrealloc(a->free, a->capfree * sizeof *a->free);
  }
  memmove(&a->free[i + 1], &a->free[i], (a->nfree - i) * sizeof *a->free);
  a->free[i] = (rv_range){off, size};
  a->nfree++;
  if (i + 1 < a->nfree && a->free[i].off + a->free[i].size == a->free[i + 1].off) {
    a->free[i].size += a->free[i + 1].size;
    memmove(&a->free[i + 1], &a->free[i + 2], (a->nfree - i - 2) * sizeof *a->free);
    a->nfree--;
  }
  if (i > 0 && a->free[i - 1].off + a->free[i - 1].size == a->free[i].off) {
    a->free[i - 1].size += a->free[i].size;
    memmove(&a->free[i], &a->free[i + 1], (a->nfree - i - 1) * sizeof *a->free);
    a->nfree--;
  }
}

int rv_dev_malloc(int dev, size_t size, void **out) {
  rv_device *d = rv_device_get(dev);
  if (!d || !out) return -2;
  if (size == 0) { *out = NULL; return 0; }
  /* Real allocations are at least 512-byte aligned and come in 2 MiB pages when large. */
  size_t align = size >= (2u << 20) ? (2u << 20) : 512;
  size_t rounded = align_up(size, align);
  pthread_mutex_lock(&rv_lock);
  if (d->used + rounded > d->capacity) {
    pthread_mutex_unlock(&rv_lock);
    RV_LOG(RV_LOG_INFO, "device %d out of memory: %zu requested, %llu used of %llu", dev, size,
           (unsigned long long)d->used, (unsigned long long)d->capacity);
    return -1;
  }
  if (arena_ready(dev)) { pthread_mutex_unlock(&rv_lock); return -1; }
  rv_arena *a = &rv_arenas[dev];
  for (size_t i = 0; i < a->nfree; i++) {
    uintptr_t start = align_up(a->free[i].off, align);
    if (start + rounded > a->free[i].off + a->free[i].size) continue;
    uintptr_t r_off = a->free[i].off;
    size_t r_size = a->free[i].size;
    memmove(&a->free[i], &a->free[i + 1], (a->nfree - i - 1) * sizeof *a->free);
    a->nfree--;
    if (start > r_off) arena_release(a, r_off, start - r_off);
    if (start + rounded < r_off + r_size) arena_release(a, start + rounded, r_off + r_size - start - rounded);
    rv_alloc_info info = {RV_MEM_DEVICE, dev, (uintptr_t)a->base + start, rounded, rounded <= rv_backed_max};
    live_insert(&info);
    d->used += rounded;
    if (d->used > d->peak_used) d->peak_used = d->used;
    pthread_mutex_unlock(&rv_lock);
    *out = (void *)info.base;
    return 0;
  }
  pthread_mutex_unlock(&rv_lock);
  rv_log(RV_LOG_ERROR, "device %d address space fragmented (%zu bytes)", dev, size);
  return -1;
}

int rv_dev_free(void *ptr) {
  if (!ptr) return 0;
  rv_alloc_info info;
  pthread_mutex_lock(&rv_lock);
  if (live_remove((uintptr_t)ptr, &info) || info.kind != RV_MEM_DEVICE) {
    pthread_mutex_unlock(&rv_lock);
    return -1;
  }
  rv_arena *a = &rv_arenas[info.device];
  if (info.backed) madvise(ptr, info.size, MADV_DONTNEED); /* give touched pages back */
  arena_release(a, info.base - (uintptr_t)a->base, info.size);
  rv_devices[info.device].used -= info.size;
  pthread_mutex_unlock(&rv_lock);
  return 0;
}

int rv_host_alloc(size_t size, void **out) {
  void *p = mmap(NULL, size ? size : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -1;
  rv_alloc_info info = {RV_MEM_HOST, rv_current_device(), (uintptr_t)p, size ? size : 1, 1};
  pthread_mutex_lock(&rv_lock);
  live_insert(&info);
  pthread_mutex_unlock(&rv_lock);
  *out = p;
  return 0;
}

int rv_host_free(void *ptr) {
  rv_alloc_info info;
  pthread_mutex_lock(&rv_lock);
  int rc = live_remove((uintptr_t)ptr, &info);
  pthread_mutex_unlock(&rv_lock);
  if (rc || info.kind != RV_MEM_HOST) return -1;
  munmap(ptr, info.size);
  return 0;
}

int rv_host_register(void *ptr, size_t size) {
  /* Registered (not owned) host memory: recorded so that pointer queries see it. */
  rv_alloc_info info = {RV_MEM_HOST, rv_current_device(), (uintptr_t)ptr, size, 2};
  pthread_mutex_lock(&rv_lock);
  int rc = live_find((uintptr_t)ptr, NULL) ? -1 : 0;
  if (!rc) live_insert(&info);
  pthread_mutex_unlock(&rv_lock);
  return rc;
}

int rv_host_unregister(void *ptr) {
  pthread_mutex_lock(&rv_lock);
  int rc = live_remove((uintptr_t)ptr, NULL);
  pthread_mutex_unlock(&rv_lock);
  return rc;
}

int rv_classify(const void *ptr, rv_alloc_info *info) {
  pthread_mutex_lock(&rv_lock);
  int kind = live_find((uintptr_t)ptr, info);
  if (!kind) {
    /* Inside a reservation but not live (freed, or an interior pointer past the end):
     * still device memory, and bulk. */
    for (int d = 0; d < rv_num_visible; d++) {
      rv_arena *a = &rv_arenas[d];
      if (a->base && (const uint8_t *)ptr >= a->base && (const uint8_t *)ptr < a->base + a->reserve) {
        kind = RV_MEM_DEVICE;
        if (info) *info = (rv_alloc_info){RV_MEM_DEVICE, d, (uintptr_t)ptr, 0, 0};
        break;
      }
    }
  }
  pthread_mutex_unlock(&rv_lock);
  return kind;
}

void rv_mem_get_info(int dev, size_t *free_bytes, size_t *total_bytes) {
  rv_device *d = rv_device_get(dev);
  if (!d) return;
  if (total_bytes) *total_bytes = d->spec->memory_bytes;
  if (free_bytes) *free_bytes = d->capacity - d->used;
}

/* A range is writable for real when it lies inside one backed allocation (or host memory). */
static int real_target(const void *p, size_t bytes, int *is_dev) {
  rv_alloc_info info;
  int kind = rv_classify(p, &info);
  *is_dev = kind == RV_MEM_DEVICE;
  if (kind != RV_MEM_DEVICE) return 1;
  return info.backed && (uintptr_t)p + bytes <= info.base + info.size;
}

int rv_copy_effect(void *dst, const void *src, size_t bytes) {
  int dst_dev, src_dev;
  int dst_real = real_target(dst, bytes, &dst_dev);
  int src_real = real_target(src, bytes, &src_dev);
  int dir = (src_dev ? 2 : 0) | (dst_dev ? 1 : 0);
  if (bytes == 0) return dir;
  if (dst_real && (src_real || !src_dev)) {
    memmove(dst, src, bytes);
    rv_global_stats.copies_real_bytes += bytes;
  } else if (dst_real) {
    memset(dst, 0, bytes); /* bulk memory reads as zeros */
    rv_global_stats.copies_real_bytes += bytes;
  } else {
    rv_global_stats.copies_dropped_bytes += bytes;
  }
  return dir;
}

void rv_memset_effect(void *dst, int value, size_t bytes) {
  int is_dev;
  if (bytes && real_target(dst, bytes, &is_dev)) memset(dst, value, bytes);
}

uint64_t rv_host_rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long long size = 0, rss = 0;
  if (f) {
    if (fscanf(f, "%llu %llu", &size, &rss) != 2) rss = 0;
    fclose(f);
  }
  return rss * (uint64_t)sysconf(_SC_PAGESIZE);
}
