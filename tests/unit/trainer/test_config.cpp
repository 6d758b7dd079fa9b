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

TEST(Config, ResolvedYamlRoundTrips) {
  const auto c = load_config(kTiny, {"optim.lr=0.005", "finetune.freeze=[encoder.layers.0]"});
  const auto text = config_to_yaml(c);
  const auto path = write_temp("resolved.yaml", text);
  const auto again = load_config(path, {});
  EXPECT_EQ(config_to_yaml(again), text);
  EXPECT_DOUBLE_EQ(again.optim.lr, 0.005);
  EXPECT_EQ(again.finetune.freeze, std::vector<std::string>{"encoder.layers.0"});
}
