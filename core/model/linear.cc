#include "core/model/linear.h"

namespace qatd::model {

// The weight starts at zero, not at a random init: a model is built and then either loaded
// (every weight overwritten) or initialised explicitly (model_io.h InitTinyQwen3). Zeros
// cost one memset and can never leak uninitialised memory (NaNs) into a forward.
DenseLinear::DenseLinear(int64_t in, int64_t out, at::TensorOptions options) {
  TORCH_CHECK(in > 0 && out > 0, "DenseLinear: in and out must be positive, got ", in, " and ", out);
  weight = register_parameter("weight", at::zeros({out, in}, options));
}

at::Tensor DenseLinear::forward(const at::Tensor& x) { return at::linear(x, weight); }

}  // namespace qatd::model
