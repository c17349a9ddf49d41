#include "core/jobs/job_spec.h"

#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/pipeline_plan.h"
#include "tests/common/temp_dir.h"

namespace qatd::server {
namespace {

using jobs::SpecCheckContext;
using jobs::ValidateJobSpec;

using ::testing::HasSubstr;

class SpecValidationTest : public ::testing::Test {
 protected:
  v1::JobSpec KdCache() {
    v1::JobSpec spec;
    spec.mutable_kd_cache()->set_teacher_model(dir_.path().string());
    spec.mutable_kd_cache()->set_dataset(dir_.path().string());
    return spec;
  }
  std::string Error(const v1::JobSpec& spec) {
    absl::Status status = ValidateJobSpec(spec);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    return std::string(status.message());
  }
  qatd::testing::TempDir dir_;
};

TEST_F(SpecValidationTest, AcceptsAMinimalValidSpecOfEachRunnableShape) {
  EXPECT_TRUE(ValidateJobSpec(KdCache()).ok());
  v1::JobSpec probe;
  probe.mutable_probe();
  EXPECT_TRUE(ValidateJobSpec(probe).ok());
  v1::JobSpec qat;
  qat.mutable_qat()->set_model(dir_.path().string());
  qat.mutable_qat()->set_kd_cache_dir(dir_.path().string());
  qat.mutable_qat()->set_train_scales(true);
  EXPECT_TRUE(ValidateJobSpec(qat).ok()) << ValidateJobSpec(qat);
}

TEST_F(SpecValidationTest, NamesTheBadField) {
  EXPECT_EQ(Error(v1::JobSpec()),
            "spec must set one of kd_cache, layerwise, qat, convert, snap, eval, generate, probe, export, lora");

  v1::JobSpec spec = KdCache();
  spec.mutable_kd_cache()->set_max_length(1);
  EXPECT_EQ(Error(spec), "spec.kd_cache.max_length must be in [2, 1048576], got 1");

  spec = KdCache();
  spec.mutable_kd_cache()->set_teacher_model("");
  EXPECT_EQ(Error(spec), "spec.kd_cache.teacher_model is required");

  spec = KdCache();
  spec.mutable_kd_cache()->set_dataset("/no/such/file.json");
  EXPECT_THAT(Error(spec), HasSubstr("spec.kd_cache.dataset names a path that does not exist"));

  spec = KdCache();
  spec.mutable_kd_cache()->set_resume(true);
  spec.mutable_kd_cache()->set_overwrite(true);
  EXPECT_THAT(Error(spec), HasSubstr("spec.kd_cache.resume"));

  spec = KdCache();
  spec.mutable_kd_cache()->set_dataset_format(static_cast<v1::DatasetFormat>(42));
  EXPECT_EQ(Error(spec), "spec.kd_cache.dataset_format has no enum value 42");

  v1::JobSpec qat;
  qat.mutable_qat()->set_model(dir_.path().string());
  qat.mutable_qat()->set_kd_cache_dir(dir_.path().string());
  EXPECT_THAT(Error(qat), HasSubstr("spec.qat.train_weights or train_scales is required"));
  qat.mutable_qat()->set_train_weights(true);
  qat.mutable_qat()->mutable_quant()->set_lut_size(12);
  EXPECT_EQ(Error(qat), "spec.qat.quant.lut_size must be a power of two in [2, 256], got 12");
  qat.mutable_qat()->mutable_quant()->set_lut_size(16);
  qat.mutable_qat()->set_lr(0);
  EXPECT_EQ(Error(qat), "spec.qat.lr must be > 0, got 0");

  v1::JobSpec probe;
  probe.mutable_probe()->set_steps(-1);
  EXPECT_EQ(Error(probe), "spec.probe.steps must be in [0, 1000000], got -1");
  probe.mutable_probe()->set_steps(1);
  probe.mutable_resources()->set_device_count(-2);
  EXPECT_EQ(Error(probe), "spec.resources.device_count must be in [0, 64], got -2");
  // Data parallel is QAT's, LAYERWISE's, KD_CACHE's and EVAL's (issue #15): other kinds asking for more
  // devices are refused, not silently run on one while holding the rest.
  probe.mutable_resources()->set_device_count(2);
  EXPECT_EQ(Error(probe),
            "spec.resources.device_count is 2, but only QAT, LAYERWISE, KD_CACHE, EVAL and LORA jobs run on several "
            "devices (data parallel); this kind runs on one: ask for 1 (or 0 for the CPU)");

  v1::JobSpec generate;
  generate.mutable_generate()->set_model(dir_.path().string());
  EXPECT_EQ(Error(generate), "spec.generate.prompt is required");
}

// Found by tests/fuzz/model_config_fuzz.cc: the daemon reads the config.json of every model a
// spec names; a non-string model_type threw out of Qwen3Config::FromJson and ended the daemon.
TEST_F(SpecValidationTest, AModelConfigWithANonStringModelTypeIsABadFieldNotACrash) {
  std::ofstream(dir_.File("config.json"))
      << R"({"architectures": ["Qwen3ForCausalLM"], "head_dim": 16, "model_type": 5968})";
  EXPECT_THAT(Error(KdCache()), HasSubstr("spec.kd_cache.teacher_model names a model that cannot be used: " +
                                          dir_.File("config.json") +
                                          ": config.json: field 'model_type' must be a string, got number"));
}

TEST_F(SpecValidationTest, PipelinesValidateStructureAndFeedFields) {
  v1::PipelineSpec spec;
  auto* cache = spec.add_stages();
  cache->set_name("cache");
  *cache->mutable_spec() = KdCache();
  auto* train = spec.add_stages();
  train->set_name("train");
  train->mutable_spec()->mutable_qat()->set_model(dir_.path().string());
  train->mutable_spec()->mutable_qat()->set_train_scales(true);
  auto* input = train->add_inputs();
  input->set_from_stage("cache");
  input->set_artifact_kind("kd_cache");
  input->set_field("kd_cache_dir");  // fed: not required at submit time
  auto jobs = PlanPipeline(spec);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[1].depends_on, std::vector<int64_t>{0});  // implied by the input

  v1::PipelineSpec bad = spec;
  bad.mutable_stages(1)->mutable_inputs(0)->set_field("max_steps");
  EXPECT_THAT(std::string(PlanPipeline(bad).status().message()),
              HasSubstr("spec.stages[1].inputs[0].field: 'max_steps' is not a string field of QatSpec"));

  bad = spec;
  bad.mutable_stages(1)->mutable_inputs(0)->set_from_stage("nope");
  EXPECT_THAT(std::string(PlanPipeline(bad).status().message()), HasSubstr("spec.stages[1].inputs[0].from_stage"));

  bad = spec;
  bad.mutable_stages(1)->clear_inputs();
  EXPECT_THAT(std::string(PlanPipeline(bad).status().message()),
              HasSubstr("spec.stages[1].spec.qat.kd_cache_dir is required"));

  bad = spec;
  bad.mutable_stages(0)->add_depends_on("train");
  EXPECT_THAT(std::string(PlanPipeline(bad).status().message()), HasSubstr("cycle"));

  bad = spec;
  bad.mutable_stages(1)->set_name("cache");
  EXPECT_THAT(std::string(PlanPipeline(bad).status().message()), HasSubstr("is not unique"));

  EXPECT_EQ(PlanPipeline(v1::PipelineSpec()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SetSpecFieldTest, SetsStringFieldsOfTheActiveMessageOnly) {
  v1::JobSpec spec;
  spec.mutable_qat();
  ASSERT_TRUE(SetSpecField(spec, "kd_cache_dir", "/x").ok());
  EXPECT_EQ(spec.qat().kd_cache_dir(), "/x");
  EXPECT_EQ(SetSpecField(spec, "max_steps", "3").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SetSpecField(spec, "nope", "3").code(), absl::StatusCode::kInvalidArgument);
  v1::JobSpec empty;
  EXPECT_EQ(SetSpecField(empty, "model", "3").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qatd::server
