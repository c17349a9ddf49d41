// `qat cache`: KdCacheSpec from the flags of the seed's precompute_teacher_topk.py (spec §6.1),
// spelled with dashes as qat-kd-cache does.
#include "client/spec_commands.h"

namespace qatd::client {
namespace {

class KdCacheCommand : public SpecCommand {
 protected:
  // The format is detected by the daemon unless --dataset-format names one.
  void Init(v1::JobSpec& spec) override { spec.mutable_kd_cache()->set_dataset_format(v1::DATASET_FORMAT_AUTO); }

  std::string Example() const override {
    return "qat cache --model ./Qwen3-0.6B --dataset alpaca.json --max-length 128 "
           "--top-k 64 --num-samples 2048 --batch-size 32";
  }

  void AddFlags(SpecFlags& f) override {
    auto k = [this] { return spec_.mutable_kd_cache(); };
    f.Path("--teacher-model,--model,--teacher-model-name-or-path",
           "Teacher: a Hugging Face Qwen3 folder on the daemon's host (required)",
           [k](const std::string& v) { k()->set_teacher_model(v); });
    f.Path("--tokenizer", "tokenizer.json or its folder (default: the teacher folder)",
           [k](const std::string& v) { k()->set_tokenizer(v); });
    f.Path("--dataset,--dataset-name", "Local dataset: a .txt/.json/.jsonl file or a folder of them (required)",
           [k](const std::string& v) { k()->set_dataset(v); });
    f.Value<std::string>("--dataset-split", "Dataset split (local datasets have one: train)",
                         [k](const std::string& v) { k()->set_dataset_split(v); });
    f.Enum("--dataset-format", kDatasetFormatHelp, kDatasetFormatNames,
           [k](int v) { k()->set_dataset_format(static_cast<v1::DatasetFormat>(v)); });
    f.Value<std::string>("--dataset-text-field", "JSON field holding the text, plain format (default text)",
                         [k](const std::string& v) { k()->set_dataset_text_field(v); });
    f.Enum("--enable-thinking",
           "Chat formats' think blocks: none = template verbatim (default, as the reference cache), on, "
           "off (removed), both (off then on); false/true = off/on",
           {{"none", v1::THINKING_MODE_NONE},
            {"on", v1::THINKING_MODE_ON},
            {"off", v1::THINKING_MODE_OFF},
            {"both", v1::THINKING_MODE_BOTH},
            {"false", v1::THINKING_MODE_OFF},
            {"true", v1::THINKING_MODE_ON}},
           [k](int v) { k()->set_enable_thinking(static_cast<v1::ThinkingMode>(v)); });
    f.Enum("--text-unit", "What one record of a .txt file is (default line)",
           {{"line", v1::TEXT_UNIT_LINE}, {"paragraph", v1::TEXT_UNIT_PARAGRAPH}, {"file", v1::TEXT_UNIT_FILE}},
           [k](int v) { k()->set_text_unit(static_cast<v1::TextUnit>(v)); });
    f.Flag("--shuffle,!--no-shuffle", "Shuffle the records with --seed (default on; --no-shuffle keeps file order)",
           [k](bool v) { k()->set_shuffle(v); });
    f.Value<int>("--max-length", "L: tokens per packed sequence (default 64)",
                 [k](const int& v) { k()->set_max_length(v); });
    f.Value<int>("--top-k,--topk", "K: teacher logits kept per position (default 32)",
                 [k](const int& v) { k()->set_topk(v); });
    f.Value<int>("--rand-neg", "R: random non-top-K ids (and their logits) per position (default 0)",
                 [k](const int& v) { k()->set_rand_neg(v); });
    f.Value<int64_t>("--num-samples,--num-sequences", "Packed sequences to cache (default 20000)",
                     [k](const int64_t& v) { k()->set_num_sequences(v); });
    f.Value<int>("--batch-size", "Sequences per teacher forward (default 1)",
                 [k](const int& v) { k()->set_batch_size(v); });
    f.Value<int>("--shard-size", "Sequences per shard file (default 1024)",
                 [k](const int& v) { k()->set_shard_size(v); });
    f.Value<int64_t>("--logits-chunk-rows", "Positions whose full-vocabulary logits exist at once (default 2048)",
                     [k](const int64_t& v) { k()->set_logits_chunk_rows(v); });
    f.Enum("--dtype", "Teacher compute dtype (default auto = bf16 on CUDA, fp32 on the CPU)", kDtypeNames,
           [k](int v) { k()->set_dtype(static_cast<v1::Dtype>(v)); });
    f.Value<int64_t>("--seed", "Seed of the shuffle and the random negatives (default 0)",
                     [k](const int64_t& v) { k()->set_seed(v); });
    f.Flag("--resume", "Continue the cache in --output-dir after an interruption", [k](bool v) { k()->set_resume(v); });
    f.Flag("--overwrite", "Replace a cache already in --output-dir", [k](bool v) { k()->set_overwrite(v); });
    f.Path("--output-dir", "Cache directory on the daemon's host (default: the job's directory; else a new or empty directory under one of the daemon's --allow-output-root)",
           [k](const std::string& v) { k()->set_output_dir(v); });
  }
};

}  // namespace

std::unique_ptr<SpecCommand> NewKdCacheCommand() { return std::make_unique<KdCacheCommand>(); }

}  // namespace qatd::client
