/* A stand-in for the driver's libnvidia-ml.so.1 (tests/server/nvml_test.cc): two devices with
 * fixed memory numbers; device 1 cannot report its utilisation (NVML_ERROR_NOT_SUPPORTED = 3).
 * Built twice: once whole, once (FAKE_NVML_NO_UTILIZATION) without nvmlDeviceGetUtilizationRates. */
typedef struct { unsigned long long total, free, used; } fake_memory;
typedef struct { unsigned int gpu, memory; } fake_utilization;
static int initialized;
static int devices[2];

int nvmlInit_v2(void) { initialized = 1; return 0; }
int nvmlShutdown(void) { initialized = 0; return 0; }
const char* nvmlErrorString(int rc) { return rc == 3 ? "Not Supported" : "Uninitialized"; }
int nvmlDeviceGetCount_v2(unsigned int* count) {
  if (!initialized) return 1;
  *count = 2;
  return 0;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void** handle) {
  if (!initialized) return 1;
  if (index >= 2) return 2;
  *handle = &devices[index];
  return 0;
}
int nvmlDeviceGetMemoryInfo(void* handle, fake_memory* memory) {
  const int index = (int)((int*)handle - devices);
  memory->total = 80ull << 30;
  memory->used = (unsigned long long)(index + 1) << 30;
  memory->free = memory->total - memory->used;
  return 0;
}
#ifndef FAKE_NVML_NO_UTILIZATION
int nvmlDeviceGetUtilizationRates(void* handle, fake_utilization* utilization) {
  if ((int*)handle - devices == 1) return 3;
  utilization->gpu = 37;
  utilization->memory = 12;
  return 0;
}
#endif
