#include "core/train/grad_reducer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <exception>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/train/dist_group.h"

namespace qatd::train {

struct GradReducer::State {
  struct Bucket {
    at::ScalarType dtype;
    std::vector<int> members;  // parameter indices, in bucket order
    std::vector<int64_t> offsets;
    int64_t numel = 0;
    at::Tensor flat;  // [numel], allocated per step
    int missing = 0;  // slots not written yet this step
  };
  DistGroup* dist = nullptr;
  bool armed = false;
  std::vector<at::Tensor> params;  // set while armed only: the hooks reach .grad through it
  std::vector<Bucket> buckets;
  std::vector<int> bucket_of, slot_of;  // per parameter
  std::vector<char> written;           // per parameter, this step
  size_t next = 0;                      // the next bucket to start
  absl::Status error;

  // Allocates this step's flat buffers (one per bucket, on the parameters' device).
  void BeginStep(const std::vector<at::Tensor>& all) {
    for (Bucket& b : buckets) {
      b.flat = at::empty({b.numel}, all[b.members[0]].options().dtype(b.dtype));
      b.missing = static_cast<int>(b.members.size());
    }
    written.assign(all.size(), 0);
    next = 0;
    error = absl::OkStatus();
  }

  at::Tensor Slot(int i, const at::Tensor& p) {
    const Bucket& b = buckets[bucket_of[i]];
    const int64_t offset = b.offsets[slot_of[i]];
    return b.flat.slice(0, offset, offset + p.numel()).view(p.sizes());
  }

  // Starts the buckets whose slots are all written, in order.
  void StartReady(bool in_backward) {
    while (error.ok() && next < buckets.size() && buckets[next].missing == 0) {
      error = dist->StartAllReduceSum(buckets[next].flat);
      ++next;
      GradSyncStats& stats = dist->grad_sync_stats();
      ++(in_backward ? stats.buckets_in_backward : stats.buckets_after_backward);
    }
  }

  // The hook of parameter i: its slot = .grad so far + the incoming gradient (what
  // AccumulateGrad is about to store).
  void OnGradient(int i, const at::Tensor& grad) {
    if (!armed || !error.ok() || written[i]) return;
    try {
      const at::Tensor& p = params[i];
      c10::AutoGradMode no_grad(false);
      at::Tensor slot = Slot(i, p);
      const at::Tensor& so_far = p.grad();
      if (so_far.defined() && grad.defined()) {
        at::add_out(slot, so_far, grad);
      } else if (grad.defined()) {
        slot.copy_(grad);
      } else if (so_far.defined()) {
        slot.copy_(so_far);
      } else {
        slot.zero_();
      }
      written[i] = 1;
      --buckets[bucket_of[i]].missing;
      StartReady(/*in_backward=*/true);
    } catch (const std::exception& e) {
      error = absl::InternalError(absl::StrCat("gradient hook: ", e.what()));
    }
  }
};

GradReducer::GradReducer(DistGroup& dist, const std::vector<std::pair<std::string, at::Tensor>>& params,
                         int64_t bucket_bytes)
    : dist_(dist), bucket_bytes_(bucket_bytes), state_(std::make_shared<State>()) {
  state_->dist = &dist;
  for (const auto& [name, p] : params) params_.push_back(p);
  const int n = static_cast<int>(params_.size());
  state_->bucket_of.assign(n, -1);
  state_->slot_of.assign(n, -1);
  std::map<at::ScalarType, int> open;  // dtype -> its open bucket
  std::map<at::ScalarType, int64_t> open_bytes;
  for (int i = n - 1; i >= 0; --i) {
    const at::Tensor& p = params_[i];
    const at::ScalarType dtype = p.scalar_type();
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    auto it = open.find(dtype);
    if (it == open.end() || open_bytes[dtype] + bytes > bucket_bytes) {
      state_->buckets.push_back({});
      state_->buckets.back().dtype = dtype;
      open[dtype] = static_cast<int>(state_->buckets.size()) - 1;
      open_bytes[dtype] = 0;
    }
    State::Bucket& b = state_->buckets[open[dtype]];
    state_->bucket_of[i] = open[dtype];
    state_->slot_of[i] = static_cast<int>(b.members.size());
    b.members.push_back(i);
    b.offsets.push_back(b.numel);
    b.numel += p.numel();
    open_bytes[dtype] += bytes;
  }
}

GradReducer::~GradReducer() {
  state_->armed = false;
  state_->params.clear();
  for (size_t i = 0; i < hooks_.size(); ++i) {
    try {
      params_[i].remove_hook(hooks_[i]);
    } catch (const std::exception&) {  // nothing to do: the hook is disarmed anyway
    }
  }
}

bool GradReducer::Matches(const std::vector<std::pair<std::string, at::Tensor>>& params, int64_t bucket_bytes) const {
  if (bucket_bytes != bucket_bytes_ || params.size() != params_.size()) return false;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].second.is_same(params_[i])) return false;
  }
  return true;
}

int64_t GradReducer::num_buckets() const { return static_cast<int64_t>(state_->buckets.size()); }

void GradReducer::Arm() {
  if (hooks_.empty() && !params_.empty()) {
    const std::weak_ptr<State> weak = state_;
    for (size_t i = 0; i < params_.size(); ++i) {
      hooks_.push_back(params_[i].register_hook([weak, i](const at::Tensor& grad) {
        if (std::shared_ptr<State> state = weak.lock()) state->OnGradient(static_cast<int>(i), grad);
      }));
    }
  }
  state_->params = params_;
  state_->BeginStep(params_);
  state_->armed = true;
}

void GradReducer::Disarm() {
  state_->armed = false;
  state_->params.clear();
}

absl::Status GradReducer::Finish() {
  const bool overlapped = state_->armed;
  Disarm();
  if (!overlapped) state_->BeginStep(params_);
  GradSyncStats& stats = dist_.grad_sync_stats();
  ++stats.steps;
  if (overlapped) ++stats.overlapped_steps;
  absl::Status status = state_->error;
  if (status.ok()) {
    // Slots no hook wrote: .grad already holds the whole local gradient.
    c10::AutoGradMode no_grad(false);
    for (size_t b = state_->next; b < state_->buckets.size(); ++b) {
      State::Bucket& bucket = state_->buckets[b];
      for (int i : bucket.members) {
        if (state_->written[i]) continue;
        at::Tensor slot = state_->Slot(i, params_[i]);
        const at::Tensor& g = params_[i].grad();
        if (g.defined()) {
          slot.copy_(g);
        } else {
          slot.zero_();
        }
        state_->written[i] = 1;
        --bucket.missing;
      }
    }
    state_->StartReady(/*in_backward=*/false);
    status = state_->error;
  }
  // Every started bucket is waited for, also after an error (their buffers must outlive them).
  absl::Status waited = dist_.WaitPending();
  if (status.ok()) status = waited;
  if (status.ok()) {
    c10::AutoGradMode no_grad(false);
    for (size_t i = 0; i < params_.size(); ++i) {
      at::Tensor& g = params_[i].mutable_grad();
      if (!g.defined()) g = at::empty_like(params_[i]);
      g.copy_(state_->Slot(static_cast<int>(i), params_[i]));
    }
  }
  for (State::Bucket& b : state_->buckets) b.flat = at::Tensor();
  return status;
}

}  // namespace qatd::train
