#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "trainer/config.h"

using namespace moetrain::trainer;
namespace fs = std::filesystem;

namespace {
std::string write_temp(const std::string& name, const std::string& text) {
  const auto path = fs::temp_directory_path() / ("moetrain_test_" + name);
  std::ofstream(path) << text;
  return path.string();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

const std::string kTiny = std::string(MOETRAIN_SOURCE_DIR) + "/configs/tiny.yaml";
}  // namespace

TEST(Config, ReadsTinyPresetWithOverrides) {
  const auto c = load_config(kTiny, {"optim.lr=2e-3", "model.moe.top_k=1", "lora.targets=[q_proj, o_proj]"});
  EXPECT_EQ(c.model.d_model, 128);
  EXPECT_EQ(c.model.moe.num_experts, 4);
  EXPECT_EQ(c.model.moe.top_k, 1);
  EXPECT_DOUBLE_EQ(c.optim.lr, 2e-3);
  EXPECT_EQ(c.lora.targets, (std::vector<std::string>{"q_proj", "o_proj"}));
  EXPECT_EQ(c.data.objective, moetrain::data::Objective::SpanCorruption);
  EXPECT_EQ(c.precision.compute, ComputeDtype::FP32);
}

TEST(Config, UnknownKeyNamesPathFileLineAndSuggestion) {
  const auto path = write_temp("unknown.yaml", "model:\n  d_model: 64\n  n_haeds: 4\n");
  const auto msg = error_of([&] { load_config(path, {}); });
  EXPECT_EQ(msg, "unknown key 'model.n_haeds' (did you mean 'model.n_heads'?) (" + path + ":3)");
  const auto clean = write_temp("clean.yaml", "model:\n  d_model: 64\n");
  const auto top = error_of([&] { load_config(clean, {"optimm.lr=1"}); });
  EXPECT_EQ(top, "unknown key 'optimm' (did you mean 'optim'?) (--set optimm.lr=1)");
  const auto far = error_of([&] { load_config(clean, {"model.zzzzzzzz=1"}); });
  EXPECT_EQ(far, "unknown key 'model.zzzzzzzz' (--set model.zzzzzzzz=1)");
}

TEST(Config, WrongTypesAndChoicesAreErrors) {
  EXPECT_EQ(error_of([] { load_config(kTiny, {"train.max_steps=1.5"}); }),
            "train.max_steps: expected an integer, got '1.5' (--set train.max_steps=1.5)");
  EXPECT_EQ(error_of([] { load_config(kTiny, {"model.bias=maybe"}); }),
            "model.bias: expected true or false, got 'maybe' (--set model.bias=maybe)");
  EXPECT_EQ(error_of([] { load_config(kTiny, {"precision.compute=fp8"}); }),
            "precision.compute: 'fp8' is not one of: fp32, bf16, fp16 (--set precision.compute=fp8)");
  EXPECT_EQ(error_of([] { load_config(kTiny, {"model=3"}); }),
            "model: expected a mapping of keys (--set model=3)");
  EXPECT_NE(error_of([] { load_config(kTiny, {"noequals"}); }).find("expected key=value"), std::string::npos);
}

TEST(Config, ValidationNamesTheKeyAndItsLine) {
  const auto path = write_temp("heads.yaml", "model:\n  d_model: 100\n  n_heads: 3\ndata:\n  train: /nonexistent\n");
  ConfigSource src;
  const auto c = load_config(path, {}, &src);
  EXPECT_EQ(error_of([&] { validate_config(c, 1, src); }),
            "model.n_heads: 3 heads do not divide d_model = 100 (" + path + ":3)");
  ConfigSource src2;
  const auto c2 = load_config(path, {"model.n_heads=4"}, &src2);
  EXPECT_EQ(error_of([&] { validate_config(c2, 1, src2); }),
            "data.train: no such file or directory: /nonexistent (" + path + ":5)");
  ConfigSource src3;
  const auto c3 = load_config(path, {"model.n_heads=4", "model.moe.top_k=9"}, &src3);
  EXPECT_NE(error_of([&] { validate_config(c3, 1, src3); }).find("model.moe.top_k: must be between 1 and num_experts"),
            std::string::npos);
}

// Pipeline layouts: the stage count against the model's units, cut points by
// name or index, and the micro-batch count against the batch sizes.
TEST(Config, PipelineCutsAndMicroBatches) {
  ConfigSource src;
  const std::string dir = std::string(MOETRAIN_SOURCE_DIR) + "/configs";
  const std::vector<std::string> base{"data.train=" + dir, "data.valid=" + dir};
  auto with = [&](std::vector<std::string> overrides) {
    overrides.insert(overrides.begin(), base.begin(), base.end());
    return load_config(kTiny, overrides, &src);
  };
  // The tiny model has 2 + 2 layers: 8 units.
  EXPECT_EQ(error_of([&] { validate_config(with({"parallel.pp=16"}), 16, src); }),
            "parallel.pp: 16 stages but the model has only 8 pipeline units (embed, 2 encoder layers, encoder norm, "
            "2 decoder layers, decoder norm, lm_head) (--set parallel.pp=16)");
  EXPECT_EQ(error_of([&] { validate_config(with({"parallel.pp=2", "parallel.pp_cuts=[decoder.layer.0]"}), 2, src); }),
            "parallel.pp_cuts: 'decoder.layer.0' is not a pipeline unit of this model (embed, encoder.layers.0 .. 1, "
            "encoder.final_norm, decoder.layers.0 .. 1, decoder.final_norm, lm_head, or an index 0..7) "
            "(--set parallel.pp_cuts=[decoder.layer.0])");
  EXPECT_EQ(error_of([&] { validate_config(with({"parallel.pp=2", "parallel.pp_cuts=[1, 2]"}), 2, src); }),
            "parallel.pp_cuts: needs pp - 1 = 1 cut point(s), got 2 (--set parallel.pp_cuts=[1, 2])");
  EXPECT_NE(error_of([&] {
              validate_config(with({"parallel.pp=3", "parallel.pp_cuts=[decoder.layers.0, encoder.layers.1]"}), 3,
                              src);
            }).find("parallel.pp_cuts: stage cut points: cut points must increase"),
            std::string::npos);
  EXPECT_NE(error_of([&] { validate_config(with({"parallel.pp=2", "parallel.pp_cuts=[embed]"}), 2, src); })
                .find("leaves stage 0"),
            std::string::npos);
  const auto four = with({"parallel.pp=4", "parallel.pp_cuts=[encoder.layers.1, decoder.layers.0, 6]"});
  EXPECT_EQ(error_of([&] { validate_config(four, 4, src); }), "(no error)");
  EXPECT_EQ(resolve_pp_cuts(four), (std::vector<int64_t>{0, 2, 4, 6}));
  EXPECT_TRUE(resolve_pp_cuts(with({"parallel.pp=4"})).empty());
  // global_batch 16 / (micro_batch 8 * dp 1) = 2 micro-batches.
  EXPECT_EQ(error_of([&] { validate_config(with({"parallel.microbatches=2"}), 1, src); }), "(no error)");
  EXPECT_EQ(error_of([&] { validate_config(with({"parallel.microbatches=4"}), 1, src); }),
            "parallel.microbatches: 4 does not match train.global_batch / (train.micro_batch * dp) = 16 / (8 * 1) = 2 "
            "(0: use that) (--set parallel.microbatches=4)");
}

TEST(Config, ResolvedYamlRoundTrips) {
  const auto c = load_config(kTiny, {"optim.lr=0.005", "finetune.freeze=[encoder.layers.0]"});
  const auto text = config_to_yaml(c);
  const auto path = write_temp("resolved.yaml", text);
  const auto again = load_config(path, {});
  EXPECT_EQ(config_to_yaml(again), text);
  EXPECT_DOUBLE_EQ(again.optim.lr, 0.005);
  EXPECT_EQ(again.finetune.freeze, std::vector<std::string>{"encoder.layers.0"});
}
