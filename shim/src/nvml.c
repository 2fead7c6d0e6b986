/* NVML (libnvidia-ml.so.1): the management view of the virtual node.
 *
 * NVML enumerates every physical device of the node (CUDA_VISIBLE_DEVICES does not apply),
 * as the real library does. A device handle points at our physical device record. */
#define _GNU_SOURCE
#include <nvml.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

#define API RV_EXPORT
#define DEV(h) ((rv_device *)(h))
#define CHECK_DEV(h) do { if (!valid(h)) return NVML_ERROR_INVALID_ARGUMENT; } while (0)

static int valid(nvmlDevice_t h) {
  rv_device *d = DEV(h);
  return d >= &rv_physical[0] && d < &rv_physical[rv_num_physical];
}

API nvmlReturn_t nvmlInit_v2(void) { rv_ensure_init(); return NVML_SUCCESS; }
API nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; rv_ensure_init(); return NVML_SUCCESS; }
API nvmlReturn_t nvmlShutdown(void) { return NVML_SUCCESS; }
API const char *nvmlErrorString(nvmlReturn_t r) {
  switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    default: return "Unknown Error";
  }
}

API nvmlReturn_t nvmlSystemGetDriverVersion(char *v, unsigned int n) { snprintf(v, n, "580.95.05"); return NVML_SUCCESS; }
API nvmlReturn_t nvmlSystemGetNVMLVersion(char *v, unsigned int n) { snprintf(v, n, "13.580.95.05"); return NVML_SUCCESS; }
API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) { *v = 13000; return NVML_SUCCESS; }
API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) { *v = 13000; return NVML_SUCCESS; }

API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) { rv_ensure_init(); *n = (unsigned)rv_num_physical; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *h) {
  rv_ensure_init();
  if (i >= (unsigned)rv_num_physical) return NVML_ERROR_INVALID_ARGUMENT;
  *h = (nvmlDevice_t)&rv_physical[i];
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *h) {
  rv_ensure_init();
  for (int i = 0; i < rv_num_physical; i++)
    if (!strcmp(rv_physical[i].uuid, uuid)) { *h = (nvmlDevice_t)&rv_physical[i]; return NVML_SUCCESS; }
  return NVML_ERROR_NOT_FOUND;
}
API nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *bus, nvmlDevice_t *h) {
  rv_ensure_init();
  for (int i = 0; i < rv_num_physical; i++)
    if (!strcasecmp(rv_physical[i].pci_bus_id, bus) || !strcasecmp(rv_physical[i].pci_bus_id + 4, bus)) {
      *h = (nvmlDevice_t)&rv_physical[i];
      return NVML_SUCCESS;
    }
  return NVML_ERROR_NOT_FOUND;
}
API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t h, unsigned int *i) { CHECK_DEV(h); *i = (unsigned)DEV(h)->physical; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t h, unsigned int *i) { CHECK_DEV(h); *i = (unsigned)DEV(h)->physical; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t h, char *name, unsigned int n) {
  CHECK_DEV(h);
  if (strlen(DEV(h)->spec->name) + 1 > n) return NVML_ERROR_INSUFFICIENT_SIZE;
  snprintf(name, n, "%s", DEV(h)->spec->name);
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t h, char *uuid, unsigned int n) {
  CHECK_DEV(h);
  if (strlen(DEV(h)->uuid) + 1 > n) return NVML_ERROR_INSUFFICIENT_SIZE;
  snprintf(uuid, n, "%s", DEV(h)->uuid);
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t h, char *s, unsigned int n) {
  CHECK_DEV(h);
  snprintf(s, n, "165%010d", 1000 + DEV(h)->physical);
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetBrand(nvmlDevice_t h, nvmlBrandType_t *b) { CHECK_DEV(h); *b = NVML_BRAND_NVIDIA; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t h, nvmlDeviceArchitecture_t *a) {
  CHECK_DEV(h);
  const rv_gpu_spec *g = DEV(h)->spec;
  *a = g->cc_major >= 9 ? NVML_DEVICE_ARCH_HOPPER : (g->cc_minor == 9 ? NVML_DEVICE_ARCH_ADA : NVML_DEVICE_ARCH_AMPERE);
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t h, int *major, int *minor) {
  CHECK_DEV(h);
  *major = DEV(h)->spec->cc_major;
  *minor = DEV(h)->spec->cc_minor;
  return NVML_SUCCESS;
}

/* Memory as the whole node sees it: what this process allocated on the device counts as used. */
static void memory_of(rv_device *d, unsigned long long *total, unsigned long long *used, unsigned long long *freeb) {
  unsigned long long u = rv_context_reserve;
  for (int v = 0; v < rv_num_visible; v++)
    if (rv_devices[v].physical == d->physical) u += rv_devices[v].used;
  *total = d->spec->memory_bytes;
  *used = u;
  *freeb = *total - u;
}
API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t h, nvmlMemory_t *m) {
  CHECK_DEV(h);
  memory_of(DEV(h), &m->total, &m->used, &m->free);
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t h, nvmlMemory_v2_t *m) {
  CHECK_DEV(h);
  memory_of(DEV(h), &m->total, &m->used, &m->free);
  m->reserved = 0;
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetBAR1MemoryInfo(nvmlDevice_t h, nvmlBAR1Memory_t *m) {
  CHECK_DEV(h);
  m->bar1Total = 128ULL << 30;
  m->bar1Used = 32ULL << 20;
  m->bar1Free = m->bar1Total - m->bar1Used;
  return NVML_SUCCESS;
}

static void fill_pci(rv_device *d, nvmlPciInfo_t *p) {
  memset(p, 0, sizeof *p);
  snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "%s", d->pci_bus_id + 4);
  snprintf(p->busId, sizeof p->busId, "%s", d->pci_bus_id);
  p->domain = 0;
  p->bus = (unsigned)d->pci_bus;
  p->device = 0;
  p->pciDeviceId = d->spec->cc_major >= 9 ? 0x233010DE : (d->spec->cc_minor == 9 ? 0x26B910DE : 0x20B210DE);
  p->pciSubSystemId = 0x16C110DE;
}
API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t h, nvmlPciInfo_t *p) { CHECK_DEV(h); fill_pci(DEV(h), p); return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t h, nvmlPciInfo_t *p) { return nvmlDeviceGetPciInfo_v3(h, p); }
API nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(nvmlDevice_t h, unsigned int *g) { CHECK_DEV(h); *g = (unsigned)DEV(h)->spec->pcie_gen; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetMaxPcieLinkGeneration(nvmlDevice_t h, unsigned int *g) { CHECK_DEV(h); *g = (unsigned)DEV(h)->spec->pcie_gen; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(nvmlDevice_t h, unsigned int *w) { CHECK_DEV(h); *w = 16; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetMaxPcieLinkWidth(nvmlDevice_t h, unsigned int *w) { CHECK_DEV(h); *w = 16; return NVML_SUCCESS; }

API nvmlReturn_t nvmlDeviceGetP2PStatus(nvmlDevice_t a, nvmlDevice_t b, nvmlGpuP2PCapsIndex_t idx, nvmlGpuP2PStatus_t *st) {
  if (!valid(a) || !valid(b)) return NVML_ERROR_INVALID_ARGUMENT;
  int nvlink = DEV(a)->spec->nvlink;
  if (idx == NVML_P2P_CAPS_INDEX_NVLINK) *st = nvlink ? NVML_P2P_STATUS_OK : NVML_P2P_STATUS_NOT_SUPPORTED;
  else *st = NVML_P2P_STATUS_OK;
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t a, nvmlDevice_t b, nvmlGpuTopologyLevel_t *lvl) {
  if (!valid(a) || !valid(b)) return NVML_ERROR_INVALID_ARGUMENT;
  *lvl = a == b ? NVML_TOPOLOGY_INTERNAL : (DEV(a)->physical / 4 == DEV(b)->physical / 4 ? NVML_TOPOLOGY_HOSTBRIDGE : NVML_TOPOLOGY_SYSTEM);
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t h, unsigned int link, nvmlEnableState_t *active) {
  CHECK_DEV(h);
  *active = DEV(h)->spec->nvlink && link < 18 ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
  return DEV(h)->spec->nvlink ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}
API nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t h, unsigned int link, nvmlPciInfo_t *p) {
  CHECK_DEV(h);
  if (!DEV(h)->spec->nvlink) return NVML_ERROR_NOT_SUPPORTED;
  /* Every NVLink of an HGX board goes to an NVSwitch; report the switch's bus. */
  memset(p, 0, sizeof *p);
  snprintf(p->busId, sizeof p->busId, "00000000:%02X:00.0", 0xc0 + (int)(link % 4));
  snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "0000:%02X:00.0", 0xc0 + (int)(link % 4));
  p->bus = 0xc0 + link % 4;
  return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetCpuAffinity(nvmlDevice_t h, unsigned int n, unsigned long *set) {
  CHECK_DEV(h);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  memset(set, 0, n * sizeof *set);
  for (long c = 0; c < cpus && (unsigned long)c < n * 64; c++) set[c / 64] |= 1UL << (c % 64);
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetCpuAffinityWithinScope(nvmlDevice_t h, unsigned int n, unsigned long *set, nvmlAffinityScope_t s) {
  (void)s;
  return nvmlDeviceGetCpuAffinity(h, n, set);
}
API nvmlReturn_t nvmlDeviceGetMemoryAffinity(nvmlDevice_t h, unsigned int n, unsigned long *set, nvmlAffinityScope_t s) {
  (void)s;
  CHECK_DEV(h);
  memset(set, 0, n * sizeof *set);
  if (n) set[0] = 1;
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetNumaNodeId(nvmlDevice_t h, unsigned int *node) { CHECK_DEV(h); *node = 0; return NVML_SUCCESS; }

API nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t h, nvmlClockType_t t, unsigned int *mhz) {
  CHECK_DEV(h);
  *mhz = (unsigned)(t == NVML_CLOCK_MEM ? DEV(h)->spec->mem_clock_mhz : DEV(h)->spec->sm_clock_mhz);
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t h, nvmlClockType_t t, unsigned int *mhz) { return nvmlDeviceGetClockInfo(h, t, mhz); }
API nvmlReturn_t nvmlDeviceGetClock(nvmlDevice_t h, nvmlClockType_t t, nvmlClockId_t id, unsigned int *mhz) {
  (void)id;
  return nvmlDeviceGetClockInfo(h, t, mhz);
}
API nvmlReturn_t nvmlDeviceGetMemoryBusWidth(nvmlDevice_t h, unsigned int *w) { CHECK_DEV(h); *w = (unsigned)DEV(h)->spec->mem_bus_width_bits; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetNumGpuCores(nvmlDevice_t h, unsigned int *n) { CHECK_DEV(h); *n = (unsigned)DEV(h)->spec->sm_count * 128; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t h, unsigned int *mw) { CHECK_DEV(h); *mw = (unsigned)DEV(h)->spec->power_limit_w * 1000; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t h, unsigned int *mw) { return nvmlDeviceGetPowerManagementLimit(h, mw); }
API nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t h, unsigned int *mw) { CHECK_DEV(h); *mw = 75000; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t h, nvmlTemperatureSensors_t s, unsigned int *t) { (void)s; CHECK_DEV(h); *t = 35; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t h, unsigned int *s) { CHECK_DEV(h); (void)s; return NVML_ERROR_NOT_SUPPORTED; }
API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t h, nvmlUtilization_t *u) { CHECK_DEV(h); u->gpu = 0; u->memory = 0; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t h, nvmlEnableState_t *m) { CHECK_DEV(h); *m = NVML_FEATURE_ENABLED; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetComputeMode(nvmlDevice_t h, nvmlComputeMode_t *m) { CHECK_DEV(h); *m = NVML_COMPUTEMODE_DEFAULT; return NVML_SUCCESS; }
API nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t h, unsigned int *cur, unsigned int *pending) {
  CHECK_DEV(h);
  if (DEV(h)->spec->cc_major < 8 || DEV(h)->spec->cc_minor == 9) return NVML_ERROR_NOT_SUPPORTED;
  *cur = NVML_DEVICE_MIG_DISABLE;
  *pending = NVML_DEVICE_MIG_DISABLE;
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t h, nvmlEnableState_t *cur, nvmlEnableState_t *pending) {
  CHECK_DEV(h);
  *cur = NVML_FEATURE_ENABLED;
  *pending = NVML_FEATURE_ENABLED;
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetGpuFabricInfoV(nvmlDevice_t h, nvmlGpuFabricInfoV_t *info) {
  CHECK_DEV(h);
  /* Single-node HGX: no multi-node NVLink fabric. */
  unsigned int version = info->version;
  memset(info, 0, sizeof *info);
  info->version = version;
  info->state = NVML_GPU_FABRIC_STATE_NOT_SUPPORTED;
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetBoardPartNumber(nvmlDevice_t h, char *s, unsigned int n) {
  CHECK_DEV(h);
  snprintf(s, n, "revati-virtual-%s", DEV(h)->spec->key);
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetVbiosVersion(nvmlDevice_t h, char *s, unsigned int n) { CHECK_DEV(h); snprintf(s, n, "96.00.99.00.01"); return NVML_SUCCESS; }

/* The unsuffixed (v1) exports, which nvml.h hides behind #defines to the newest versions. */
#undef nvmlInit
#undef nvmlDeviceGetCount
#undef nvmlDeviceGetHandleByIndex
#undef nvmlDeviceGetPciInfo
#undef nvmlDeviceGetHandleByPciBusId
API nvmlReturn_t nvmlInit(void) { return nvmlInit_v2(); }
API nvmlReturn_t nvmlDeviceGetCount(unsigned int *n) { return nvmlDeviceGetCount_v2(n); }
API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int i, nvmlDevice_t *h) { return nvmlDeviceGetHandleByIndex_v2(i, h); }
API nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t h, nvmlPciInfo_t *p) { return nvmlDeviceGetPciInfo_v3(h, p); }
API nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *bus, nvmlDevice_t *h) { return nvmlDeviceGetHandleByPciBusId_v2(bus, h); }
#undef nvmlDeviceGetComputeRunningProcesses
#undef nvmlDeviceGetGraphicsRunningProcesses
/* No process holds a virtual GPU from NVML's point of view: with a count of 0 the
 * differently sized v1/v2 process records are never written. */
API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t h, unsigned int *n, void *infos) {
  (void)infos;
  CHECK_DEV(h);
  *n = 0;
  return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t h, unsigned int *n, void *infos) {
  return nvmlDeviceGetComputeRunningProcesses(h, n, infos);
}
API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t h, unsigned int *n, void *infos) {
  return nvmlDeviceGetComputeRunningProcesses(h, n, infos);
}
API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t h, unsigned int *n, void *infos) {
  return nvmlDeviceGetComputeRunningProcesses(h, n, infos);
}
API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t h, unsigned int *n, nvmlProcessInfo_t *infos) {
  return nvmlDeviceGetComputeRunningProcesses(h, n, infos);
}
API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t h, unsigned int *n, nvmlProcessInfo_t *infos) {
  return nvmlDeviceGetComputeRunningProcesses(h, n, infos);
}
