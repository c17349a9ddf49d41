#include "core/train/dist_group.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/version.h>

#include <deque>
#include <chrono>
#include <exception>
#include <map>
#include <stdexcept>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/train/grad_reducer.h"

#if defined(QATD_HAVE_GLOO) || defined(QATD_HAVE_NCCL)
#define QATD_HAVE_C10D 1
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "core/train/dist_backend.h"
#endif
#ifdef QATD_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

namespace qatd::train {

std::string DistBuildString() {
#ifdef QATD_VERSION_STRING
  const char* version = QATD_VERSION_STRING;
#else
  const char* version = "dev";
#endif
  return absl::StrCat("qatd ", version, " torch ", TORCH_VERSION_MAJOR, ".", TORCH_VERSION_MINOR, ".",
                      TORCH_VERSION_PATCH);
}

bool DistHasNccl() {
#ifdef QATD_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

#ifdef QATD_HAVE_C10D
struct DistGroup::Impl {
  struct Pending {
    c10::intrusive_ptr<c10d::Work> work;
    at::Tensor staged, original;  // staged: the copy on the group's device, when `original` is not
    std::chrono::steady_clock::time_point started;
  };
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<internal::CollectiveBackend> pg;
  bool nccl = false;
  std::deque<Pending> pending;
};
#else
struct DistGroup::Impl {
  bool nccl = false;
};
#endif

namespace {

// Runs a c10d call; a c10d/Gloo/NCCL exception (a peer gone, a timeout) becomes ABORTED naming it.
// Adds the wall time of its scope to `total` (DistGroup::collective_seconds).
struct CollectiveTimer {
  explicit CollectiveTimer(double& total) : total_(total), start_(std::chrono::steady_clock::now()) {}
  ~CollectiveTimer() { total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }
  double& total_;
  std::chrono::steady_clock::time_point start_;
};

template <typename F>
absl::Status Guard(const char* what, int rank, F&& f) {
  try {
    f();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    std::string message = e.what();
    if (const size_t eol = message.find("\nException raised from"); eol != std::string::npos) message.resize(eol);
    return absl::AbortedError(absl::StrCat("rank ", rank, ": ", what, " failed (another rank died, hung or was cancelled): ",
                                           message));
  }
}

#ifdef QATD_HAVE_C10D
// Waits for a started collective. Gloo: wait() blocks, bounded by the group's timeout. NCCL
// (no blocking wait, dist_group.h): the host polls the work until its kernels finished, or
// throws once `timeout` passed since `started`; then wait() orders the current stream after
// it (and rethrows an error the work recorded). Polling yields for the first 2 ms, then sleeps
// 50 us per look, so a finished all-reduce is seen within microseconds, not a sleep quantum.
void WaitWork(const c10::intrusive_ptr<c10d::Work>& work, bool nccl, std::chrono::milliseconds timeout,
              std::chrono::steady_clock::time_point started) {
  if (nccl) {
    const auto polling = std::chrono::steady_clock::now();
    while (!work->isCompleted()) {
      const auto now = std::chrono::steady_clock::now();
      if (now - started > timeout) {
        throw std::runtime_error(absl::StrCat("the collective did not finish within the ", timeout.count(), " ms timeout"));
      }
      if (now - polling < std::chrono::milliseconds(2)) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }
  work->wait();
}
#endif

}  // namespace

DistGroup::DistGroup(DistOptions options) : options_(std::move(options)), impl_(std::make_unique<Impl>()) {}

void DistGroup::set_grad_reducer(std::unique_ptr<GradReducer> reducer) { grad_reducer_ = std::move(reducer); }

DistGroup::~DistGroup() {
  grad_reducer_.reset();
#ifdef QATD_HAVE_C10D
  // Collectives still in flight (a step that failed half-way) finish or time out first: their
  // buffers must outlive them.
  if (impl_ != nullptr) (void)WaitPending();
#endif
}

const char* DistGroup::backend_name() const {
  if (!distributed()) return "none";
  return impl_->nccl ? "nccl" : "gloo";
}

absl::Status DistGroup::NoGroup() const {
  return absl::UnimplementedError("this qatd-worker was built without a c10d backend (Gloo: libgloo-dev headers)");
}

absl::StatusOr<std::unique_ptr<DistGroup>> DistGroup::Create(const DistOptions& options) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " is outside a world of ", options.world_size, " rank(s)"));
  }
  std::unique_ptr<DistGroup> group(new DistGroup(options));
  if (!group->distributed()) return group;
  // The backend: NCCL for a CUDA job of a build with NCCL (dist_group.h), else Gloo.
  const bool cpu_device = !options.device.empty() && absl::string_view(options.device).substr(0, 3) == "cpu";
  bool nccl = options.backend == DistBackend::kNccl;
  if (options.backend == DistBackend::kAuto) nccl = DistHasNccl() && !cpu_device && at::hasCUDA();
  if (nccl && !DistHasNccl()) {
    return absl::UnimplementedError("backend nccl: this qatd-worker was built without NCCL (a CUDA LibTorch with nccl.h)");
  }
  group->impl_->nccl = nccl;
#ifdef QATD_HAVE_NCCL
  if (nccl) {
    absl::StatusOr<at::Device> device = internal::NcclDevice(options.device, options.rank);
    if (!device.ok()) return device.status();
    group->device_ = *device;
    internal::SetNcclBlockingWaitDefault();
  }
#endif
#ifndef QATD_HAVE_GLOO
  if (!nccl) {
    return absl::UnimplementedError(
        "this qatd-worker was built without Gloo (libgloo-dev headers), so a job cannot run on more than one rank");
  }
#endif
#ifdef QATD_HAVE_C10D
  if (options.rank != 0 && options.store_port <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", options.rank, " needs rank 0's store port"));
  }
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(options.store_port);
  store_options.isServer = options.rank == 0;
  store_options.numWorkers = options.world_size;
  store_options.waitWorkers = false;
  store_options.timeout = options.timeout;
  absl::Status made = Guard("the rendezvous store", options.rank, [&] {
    auto tcp = c10::make_intrusive<c10d::TCPStore>(options.store_host, store_options);
    group->port_ = tcp->getPort();
    group->impl_->store = c10::make_intrusive<c10d::PrefixStore>("qatd", tcp);
  });
  if (!made.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot ", options.rank == 0 ? "host" : "reach", " the rendezvous store at ",
                                               options.store_host, ":", options.store_port, ": ", made.message()));
  }
  return group;
#else
  return group->NoGroup();
#endif
}

absl::Status DistGroup::Connect() {
  if (!distributed()) return absl::OkStatus();
#ifndef QATD_HAVE_C10D
  return NoGroup();
#else
  absl::Status joined = Guard("joining the process group", rank(), [&] {
#ifdef QATD_HAVE_NCCL
    if (impl_->nccl) {
      impl_->pg = internal::MakeNcclBackend(impl_->store, rank(), world_size(), options_.timeout, device_);
      return;
    }
#endif
#ifdef QATD_HAVE_GLOO
    auto gloo_options = c10d::ProcessGroupGloo::Options::create(options_.timeout);
    gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(options_.gloo_hostname));
    gloo_options->threads = 2;
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, rank(), world_size(), gloo_options);
#endif
  });
  if (!joined.ok()) return joined;
  const std::string mine = options_.version.empty() ? DistBuildString() : options_.version;
  std::string first;
  absl::Status compared = Guard("comparing versions", rank(), [&] {
    impl_->store->set(absl::StrCat("version/", rank()), std::vector<uint8_t>(mine.begin(), mine.end()));
    const std::vector<uint8_t> v0 = impl_->store->get("version/0");
    first.assign(v0.begin(), v0.end());
  });
  if (!compared.ok()) return compared;
  if (first != mine) {
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", rank(), " runs '", mine, "' but rank 0 runs '", first, "': every rank must run the same build"));
  }
  if (primary()) {
    for (int r = 1; r < world_size(); ++r) {
      std::string theirs;
      absl::Status got = Guard("comparing versions", rank(), [&] {
        const std::vector<uint8_t> v = impl_->store->get(absl::StrCat("version/", r));
        theirs.assign(v.begin(), v.end());
      });
      if (!got.ok()) return got;
      if (theirs != mine) {
        return absl::FailedPreconditionError(absl::StrCat("rank ", r, " runs '", theirs, "' but rank 0 runs '", mine,
                                                          "': every rank must run the same build"));
      }
    }
  }
  return Barrier();  // NCCL: also creates the communicator on device_
#endif
}

#ifdef QATD_HAVE_C10D
namespace {

c10d::ReduceOp ToC10d(ReduceOp op) {
  return op == ReduceOp::kSum ? c10d::ReduceOp::SUM : op == ReduceOp::kMax ? c10d::ReduceOp::MAX : c10d::ReduceOp::MIN;
}

// What the backend is handed: `tensor` itself, or (NCCL and a tensor elsewhere than the
// group's device, or a non-contiguous one) a contiguous copy on `device`.
at::Tensor Staged(const at::Tensor& tensor, bool nccl, const at::Device& device) {
  if (nccl && tensor.device() != device) return tensor.to(device).contiguous();
  return tensor.is_contiguous() ? tensor : tensor.contiguous();
}

}  // namespace
#endif

absl::Status DistGroup::AllReduce(at::Tensor& tensor, ReduceOp op) {
  if (!distributed()) return absl::OkStatus();
#ifdef QATD_HAVE_C10D
  if (!impl_->pg) return absl::FailedPreconditionError("DistGroup: Connect() first");
  ++collectives_;
  CollectiveTimer timer(collective_seconds_);
  return Guard("all-reduce", rank(), [&] {
    c10d::AllreduceOptions o;
    o.reduceOp = ToC10d(op);
    at::Tensor staged = Staged(tensor, impl_->nccl, device_);
    std::vector<at::Tensor> list{staged};
    WaitWork(impl_->pg->allreduce(list, o), impl_->nccl, options_.timeout, std::chrono::steady_clock::now());
    if (!staged.is_same(tensor)) tensor.copy_(staged);
  });
#else
  (void)op;
  return NoGroup();
#endif
}

absl::Status DistGroup::StartAllReduceSum(at::Tensor& tensor) {
  if (!distributed()) return absl::OkStatus();
#ifdef QATD_HAVE_C10D
  if (!impl_->pg) return absl::FailedPreconditionError("DistGroup: Connect() first");
  ++collectives_;
  return Guard("starting an all-reduce", rank(), [&] {
    Impl::Pending p;
    p.original = tensor;
    p.staged = Staged(tensor, impl_->nccl, device_);
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    std::vector<at::Tensor> list{p.staged};
    p.started = std::chrono::steady_clock::now();
    p.work = impl_->pg->allreduce(list, o);
    impl_->pending.push_back(std::move(p));
  });
#else
  (void)tensor;
  return NoGroup();
#endif
}

absl::Status DistGroup::WaitPending() {
#ifdef QATD_HAVE_C10D
  absl::Status first = absl::OkStatus();
  while (!impl_->pending.empty()) {
    Impl::Pending p = std::move(impl_->pending.front());
    impl_->pending.pop_front();
    CollectiveTimer timer(collective_seconds_);
    absl::Status s = Guard("waiting for an all-reduce", rank(), [&] {
      WaitWork(p.work, impl_->nccl, options_.timeout, p.started);
      if (!p.staged.is_same(p.original)) p.original.copy_(p.staged);
    });
    if (first.ok()) first = s;  // the rest still wait: their buffers must outlive them
  }
  return first;
#else
  return absl::OkStatus();
#endif
}

int64_t DistGroup::pending() const {
#ifdef QATD_HAVE_C10D
  return static_cast<int64_t>(impl_->pending.size());
#else
  return 0;
#endif
}

absl::Status DistGroup::AllReduceSum(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  if (!distributed()) return absl::OkStatus();
  // Buckets of one dtype, in order, each at most bucket_bytes (a larger tensor alone).
  std::vector<std::vector<at::Tensor>> buckets;
  std::map<at::ScalarType, size_t> open;  // dtype -> index of its open bucket
  std::map<at::ScalarType, int64_t> open_bytes;
  for (const at::Tensor& t : tensors) {
    if (!t.defined()) return absl::InvalidArgumentError("AllReduceSum: an undefined tensor");
    const at::ScalarType dtype = t.scalar_type();
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    auto it = open.find(dtype);
    if (it == open.end() || open_bytes[dtype] + bytes > bucket_bytes) {
      buckets.emplace_back();
      open[dtype] = buckets.size() - 1;
      open_bytes[dtype] = 0;
    }
    buckets[open[dtype]].push_back(t);
    open_bytes[dtype] += bytes;
  }
  for (std::vector<at::Tensor>& bucket : buckets) {
    std::vector<at::Tensor> flat_parts;
    flat_parts.reserve(bucket.size());
    for (const at::Tensor& t : bucket) flat_parts.push_back(t.reshape({-1}));
    at::Tensor flat = bucket.size() == 1 && bucket[0].is_contiguous() ? bucket[0].view({-1}) : at::cat(flat_parts);
    if (absl::Status s = AllReduce(flat, ReduceOp::kSum); !s.ok()) return s;
    if (flat.data_ptr() == bucket[0].data_ptr()) continue;  // reduced in place
    int64_t offset = 0;
    for (at::Tensor& t : bucket) {
      t.copy_(flat.slice(0, offset, offset + t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }
  return absl::OkStatus();
}

absl::Status DistGroup::Broadcast(at::Tensor& tensor, int root) {
  if (!distributed()) return absl::OkStatus();
#ifdef QATD_HAVE_C10D
  if (!impl_->pg) return absl::FailedPreconditionError("DistGroup: Connect() first");
  ++collectives_;
  CollectiveTimer timer(collective_seconds_);
  return Guard("broadcast", rank(), [&] {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    at::Tensor staged = Staged(tensor, impl_->nccl, device_);
    std::vector<at::Tensor> list{staged};
    WaitWork(impl_->pg->broadcast(list, o), impl_->nccl, options_.timeout, std::chrono::steady_clock::now());
    if (!staged.is_same(tensor)) tensor.copy_(staged);
  });
#else
  (void)root;
  return NoGroup();
#endif
}

absl::Status DistGroup::Barrier() {
  if (!distributed()) return absl::OkStatus();
  at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kInt).device(device_));
  return AllReduce(one, ReduceOp::kSum);
}

absl::StatusOr<bool> DistGroup::Any(bool flag) {
  if (!distributed()) return flag;
  at::Tensor t = at::full({1}, flag ? 1 : 0, at::TensorOptions().dtype(at::kInt).device(device_));
  if (absl::Status s = AllReduce(t, ReduceOp::kMax); !s.ok()) return s;
  return t.item<int>() != 0;
}

}  // namespace qatd::train
