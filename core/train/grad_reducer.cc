#include "core/train/grad_reducer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <exception>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/train/dist_group.h"

namespace qatd::train {

struct GradReducer::State {
  struct Bucket {
    std::vector<int> members;  // parameter indices, in bucket order
    int64_t numel = 0;
    at::Tensor flat;  // [numel], for the reducer's life; the members' .grad are views of it
    int missing = 0;  // members not done yet this step
  };
  DistGroup* dist = nullptr;
  bool armed = false;
  std::vector<Bucket> buckets;
  std::vector<int> bucket_of;     // per parameter
  std::vector<at::Tensor> slots;  // per parameter: its view of its bucket
  std::vector<char> written;      // per parameter, this step
  size_t next = 0;                // the next bucket to start
  absl::Status error;
  // The parameters' gradient accumulators, kept alive so that the hooks added to them stay
  // (a leaf holds its accumulator weakly; a new one would come without the hook).
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;

  void BeginStep() {
    for (Bucket& b : buckets) b.missing = static_cast<int>(b.members.size());
    written.assign(slots.size(), 0);
    next = 0;
    error = absl::OkStatus();
  }

  // Starts the buckets whose members are all done, in order.
  void StartReady(bool in_backward) {
    while (error.ok() && next < buckets.size() && buckets[next].missing == 0) {
      error = dist->StartAllReduceSum(buckets[next].flat);
      ++next;
      GradSyncStats& stats = dist->grad_sync_stats();
      ++(in_backward ? stats.buckets_in_backward : stats.buckets_after_backward);
    }
  }

  void MarkDone(int i) {
    written[i] = 1;
    --buckets[bucket_of[i]].missing;
  }

  // After AccumulateGrad of parameter i: its gradient is in its slot.
  void OnAccumulated(int i) {
    if (!armed || !error.ok() || written[i]) return;
    try {
      MarkDone(i);
      StartReady(/*in_backward=*/true);
    } catch (const std::exception& e) {
      error = absl::InternalError(absl::StrCat("gradient hook: ", e.what()));
    }
  }
};

namespace {

// Runs after a parameter's AccumulateGrad node (autograd's thread).
class AccumulatedHook final : public torch::autograd::FunctionPostHook {
 public:
  AccumulatedHook(std::weak_ptr<GradReducer::State> state, int index) : state_(std::move(state)), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    if (std::shared_ptr<GradReducer::State> state = state_.lock()) state->OnAccumulated(index_);
    return outputs;
  }

 private:
  std::weak_ptr<GradReducer::State> state_;
  int index_;
};

}  // namespace

GradReducer::GradReducer(DistGroup& dist, const std::vector<std::pair<std::string, at::Tensor>>& params,
                         int64_t bucket_bytes)
    : dist_(dist), bucket_bytes_(bucket_bytes), state_(std::make_shared<State>()) {
  state_->dist = &dist;
  for (const auto& [name, p] : params) params_.push_back(p);
  const int n = static_cast<int>(params_.size());
  state_->bucket_of.assign(n, -1);
  std::vector<int64_t> offset_of(n, 0);
  std::map<at::ScalarType, int> open;  // dtype -> its open bucket
  std::map<at::ScalarType, int64_t> open_bytes;
  std::vector<at::ScalarType> bucket_dtype;
  for (int i = n - 1; i >= 0; --i) {
    const at::Tensor& p = params_[i];
    const at::ScalarType dtype = p.scalar_type();
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    auto it = open.find(dtype);
    if (it == open.end() || open_bytes[dtype] + bytes > bucket_bytes) {
      state_->buckets.push_back({});
      bucket_dtype.push_back(dtype);
      open[dtype] = static_cast<int>(state_->buckets.size()) - 1;
      open_bytes[dtype] = 0;
    }
    State::Bucket& b = state_->buckets[open[dtype]];
    state_->bucket_of[i] = open[dtype];
    b.members.push_back(i);
    offset_of[i] = b.numel;
    b.numel += p.numel();
    open_bytes[dtype] += bytes;
  }
  c10::AutoGradMode no_grad(false);
  for (size_t b = 0; b < state_->buckets.size(); ++b) {
    State::Bucket& bucket = state_->buckets[b];
    const at::Tensor& first = params_[bucket.members[0]];
    bucket.flat = at::zeros({bucket.numel}, first.options().dtype(bucket_dtype[b]));
  }
  state_->slots.resize(n);
  for (int i = 0; i < n; ++i) {
    const at::Tensor& p = params_[i];
    state_->slots[i] =
        state_->buckets[state_->bucket_of[i]].flat.slice(0, offset_of[i], offset_of[i] + p.numel()).view(p.sizes());
  }
  state_->BeginStep();  // the gradients are bound by the first Bind()
}

GradReducer::~GradReducer() {
  state_->armed = false;
  // The hooks stay on the accumulators (they find no state and do nothing); the accumulators
  // are released with the state, and their parameters get fresh ones at the next backward.
}

bool GradReducer::Matches(const std::vector<std::pair<std::string, at::Tensor>>& params, int64_t bucket_bytes) const {
  if (bucket_bytes != bucket_bytes_ || params.size() != params_.size()) return false;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].second.is_same(params_[i])) return false;
  }
  return true;
}

int64_t GradReducer::num_buckets() const { return static_cast<int64_t>(state_->buckets.size()); }

int GradReducer::Bind() {
  c10::AutoGradMode no_grad(false);
  int bound = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& g = params_[i].mutable_grad();
    const at::Tensor& slot = state_->slots[i];
    if (g.defined() && g.is_same(slot)) continue;
    if (g.defined()) {
      slot.copy_(g);
    } else {
      slot.zero_();
    }
    g = slot;
    ++bound;
  }
  return bound;
}

void GradReducer::Arm() {
  if (state_->accumulators.empty() && !params_.empty()) {
    const std::weak_ptr<State> weak = state_;
    for (size_t i = 0; i < params_.size(); ++i) {
      std::shared_ptr<torch::autograd::Node> node = torch::autograd::impl::grad_accumulator(params_[i]);
      if (node == nullptr) continue;  // not a leaf that requires grad: its bucket starts in Finish()
      node->add_post_hook(std::make_unique<AccumulatedHook>(weak, static_cast<int>(i)));
      state_->accumulators.push_back(std::move(node));
    }
  }
  state_->BeginStep();
  state_->armed = true;
}

void GradReducer::Disarm() { state_->armed = false; }

absl::Status GradReducer::Finish() {
  const bool overlapped = state_->armed;
  Disarm();
  if (!overlapped) state_->BeginStep();
  GradSyncStats& stats = dist_.grad_sync_stats();
  ++stats.steps;
  if (overlapped) ++stats.overlapped_steps;
  absl::Status status = state_->error;
  if (status.ok()) {
    // Members no hook marked: their .grad (the slot) already holds the whole local gradient.
    for (size_t b = state_->next; b < state_->buckets.size(); ++b) {
      for (int i : state_->buckets[b].members) {
        if (!state_->written[i]) state_->MarkDone(i);
      }
    }
    state_->StartReady(/*in_backward=*/false);
    status = state_->error;
  }
  // Every started bucket is waited for, also after an error.
  absl::Status waited = dist_.WaitPending();
  if (status.ok()) status = waited;
  return status;
}

}  // namespace qatd::train
