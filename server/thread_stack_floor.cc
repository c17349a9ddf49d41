// A floor under explicitly requested thread stack sizes, for the qatd executable only.
//
// Why: the qatd binary links LibTorch (for its worker mode), and with it libraries that use
// large initial-exec TLS (OpenBLAS ~60 KiB, glog ~30 KiB, ... ~110 KiB of static TLS per
// thread on Debian 12). glibc carves static TLS out of a thread's stack, so pthread_create
// fails with EINVAL when a caller asks for a stack smaller than that. Debian's civetweb (the
// HTTP server inside prometheus-cpp's Exposer) is built with a fixed 100 KiB worker stack
// (USE_STACK_SIZE=102400), so /metrics could not start in a LibTorch-linked process:
// "null context when constructing CivetServer".
//
// This definition interposes the libc function for every library of the process (the
// executable's dynamic symbols come first in lookup order) and raises requests below 2 MiB to
// 2 MiB; larger requests and threads with default attributes are unchanged. It is not part of
// qatd_server, so the LibTorch-free test binaries keep the plain libc behaviour.
#include <dlfcn.h>
#include <pthread.h>

#include <cstddef>

namespace {
constexpr size_t kMinThreadStackBytes = size_t{2} << 20;
using SetStackSizeFn = int (*)(pthread_attr_t*, size_t);
}  // namespace

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t stack_size) {
  static const SetStackSizeFn real =
      reinterpret_cast<SetStackSizeFn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  if (real == nullptr) return 22;  // EINVAL: no libc definition found (cannot happen with glibc)
  return real(attr, stack_size < kMinThreadStackBytes ? kMinThreadStackBytes : stack_size);
}
