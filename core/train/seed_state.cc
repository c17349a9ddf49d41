#include "core/train/seed_state.h"

#include <filesystem>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/common/status_macros.h"
#include "core/model/torch_state_dict.h"
#include "core/quant/quantize_model.h"

namespace qatd::train {
namespace fs = std::filesystem;
namespace {

constexpr char kMagnitude[] = ".rank_magnitude";

// The LUT size and rank of one seed layer, and the layer they were read from.
struct KindSettings {
  std::string layer;
  int lut_size = 0;
  int rank = 0;
};

}  // namespace

absl::StatusOr<std::string> SeedStateFilePath(const std::string& checkpoint) {
  std::error_code ec;
  if (fs::is_regular_file(checkpoint, ec)) return checkpoint;
  for (const char* name : {"model_state_dict.pt", "best_state_dict.pt"}) {
    const fs::path p = fs::path(checkpoint) / name;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return absl::NotFoundError(absl::StrCat("checkpoint ", checkpoint,
                                          " is neither a qatd checkpoint (config.json + model.safetensors) nor a "
                                          "seed file/directory (model_state_dict.pt or best_state_dict.pt)"));
}

absl::StatusOr<quant::TensorMap> ReadSeedStateDict(const std::string& path) {
  // The safe reader (torch_state_dict.h): Python's torch.save(model.state_dict()) pickles an
  // OrderedDict, which LibTorch's pickle_load turns into None.
  QATD_ASSIGN_OR_RETURN(model::NamedTensors tensors, model::ReadTorchStateDict(path));
  quant::TensorMap out;
  for (auto& [name, tensor] : tensors) out[name] = std::move(tensor);
  return out;
}

bool HoldsV2Layers(const quant::TensorMap& state) {
  for (const auto& [key, value] : state) {
    if (absl::EndsWith(key, kMagnitude) &&
        quant::ClassifyLinear(std::string_view(key).substr(0, key.size() - (sizeof(kMagnitude) - 1)))) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<quant::QuantConfigV2> SeedQuantConfigV2(const quant::TensorMap& state, const quant::QuantConfigV2& base) {
  std::optional<KindSettings> mlp, attn, head;
  for (const auto& [key, value] : state) {
    if (!absl::EndsWith(key, kMagnitude)) continue;
    const std::string layer = key.substr(0, key.size() - (sizeof(kMagnitude) - 1));
    const std::optional<quant::LinearKind> kind = quant::ClassifyLinear(layer);
    if (!kind) continue;
    auto lut = state.find(layer + ".lut");
    auto a = state.find(layer + ".scale_A");
    if (lut == state.end() || a == state.end() || lut->second.dim() != 1 || a->second.dim() != 2) {
      return absl::InvalidArgumentError(absl::StrCat("V2 layer ", layer,
                                                     " lacks its lut [n] or scale_A [out, rank] (spec §12 V2 keys)"));
    }
    KindSettings got{layer, static_cast<int>(lut->second.size(0)), static_cast<int>(a->second.size(1))};
    std::optional<KindSettings>& slot =
        *kind == quant::LinearKind::kMlp ? mlp : (*kind == quant::LinearKind::kAttention ? attn : head);
    if (!slot) {
      slot = got;
    } else if (slot->lut_size != got.lut_size || slot->rank != got.rank) {
      return absl::InvalidArgumentError(absl::StrCat("V2 layers ", slot->layer, " (lut ", slot->lut_size, ", rank ",
                                                     slot->rank, ") and ", got.layer, " (lut ", got.lut_size, ", rank ",
                                                     got.rank, ") disagree; qatd has one setting per kind"));
    }
  }
  if (!mlp) {
    return absl::InvalidArgumentError(
        "the state_dict holds no V2 MLP layer (<layer>.mlp.*_proj.rank_magnitude): not a V2 checkpoint");
  }
  if (head && (head->lut_size != mlp->lut_size || head->rank != mlp->rank)) {
    return absl::InvalidArgumentError(absl::StrCat("V2 lm_head (lut ", head->lut_size, ", rank ", head->rank,
                                                   ") differs from the MLP layers; qatd quantizes lm_head like them"));
  }
  quant::QuantConfigV2 c = base;
  c.lut_size = mlp->lut_size;
  c.scale_rank = mlp->rank;
  c.quantize_attn = attn.has_value();
  c.attn_lut_size = attn ? attn->lut_size : 0;
  c.attn_scale_rank = attn ? attn->rank : -1;
  c.quantize_lm_head = head.has_value();
  QATD_RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::Status CheckSeedVersion(const quant::TensorMap& state, int version, const std::string& path) {
  const bool v2 = HoldsV2Layers(state);
  if (version == 1 && v2) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is a V2 state_dict (it has <layer>.rank_magnitude, spec §12), so loading it as V1 would drop the "
              "per-rank magnitudes: load it as V2 (qat eval --v2, EvalSpec.version V2)"));
  }
  if (version == 2 && !v2) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is not a V2 state_dict (no <layer>.rank_magnitude, spec §12): it holds V1 layers; load it as V1 "
              "(without --v2), or convert it (qat convert v1-to-v2)"));
  }
  return absl::OkStatus();
}

}  // namespace qatd::train
