#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "config/config.h"
#include "config/load.h"
#include "config/validate.h"

using namespace moetrain::config;
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

TEST(Config, DuplicateKeysNameBothLines) {
  const auto top =
      write_temp("duplicate.yaml", "model:\n  d_model: 64\ntrain:\n  max_steps: 3\nmodel:\n  d_model: 32\n");
  EXPECT_EQ(error_of([&] { load_config(top, {}); }), "duplicate key 'model' (" + top + ":5, first at line 1)");
  const auto nested = write_temp("duplicate_nested.yaml", "optim:\n  lr: 1.0e-3\n  warmup_steps: 2\n  lr: 2.0e-3\n");
  EXPECT_EQ(error_of([&] { load_config(nested, {}); }), "duplicate key 'optim.lr' (" + nested + ":4, first at line 2)");
  EXPECT_EQ(error_of([] { load_config_text("phases:\n  - name: a\n    name: b\n", "meta.json config"); }),
            "duplicate key 'phases[0].name' (meta.json config:3, first at line 2)");
  EXPECT_EQ(error_of([] { load_config(kTiny, {"optim={lr: 1, lr: 2}"}); }),
            "duplicate key 'optim.lr' (--set optim={lr: 1, lr: 2})");
  // The same key in two different mappings is fine.
  const auto fine = write_temp("same_key_twice.yaml", "checkpoint:\n  every: 5\nlog:\n  every: 5\n");
  EXPECT_EQ(error_of([&] { load_config(fine, {}); }), "(no error)");
}

TEST(Config, WrongTypesAndChoicesAreErrors) {
  EXPECT_EQ(error_of([] { load_config(kTiny, {"train.max_steps=1.5"}); }),
            "train.max_steps: expected an integer, got '1.5' (--set train.max_steps=1.5)");
  EXPECT_EQ(error_of([] { load_config(kTiny, {"model.bias=maybe"}); }),
            "model.bias: expected true or false, got 'maybe' (--set model.bias=maybe)");
  EXPECT_EQ(error_of([] { load_config(kTiny, {"precision.compute=fp8"}); }),
            "precision.compute: 'fp8' is not one of: fp32, bf16, fp16 (--set precision.compute=fp8)");
  EXPECT_EQ(error_of([] { load_config(kTiny, {"model=3"}); }), "model: expected a mapping of keys (--set model=3)");
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
  EXPECT_EQ(error_of([&] {
              validate_config(with({"parallel.pp=2", "parallel.pp_cuts=[decoder.layer.0]"}), 2, src);
            }),
            "parallel.pp_cuts: 'decoder.layer.0' is not a pipeline unit of this model (embed, encoder.layers.0 .. 1, "
            "encoder.final_norm, decoder.layers.0 .. 1, decoder.final_norm, lm_head, or an index 0..7) "
            "(--set parallel.pp_cuts=[decoder.layer.0])");
  EXPECT_EQ(error_of([&] {
              validate_config(with({"parallel.pp=2", "parallel.pp_cuts=[1, 2]"}), 2, src);
            }),
            "parallel.pp_cuts: needs pp - 1 = 1 cut point(s), got 2 (--set parallel.pp_cuts=[1, 2])");
  EXPECT_NE(error_of([&] {
              validate_config(with({"parallel.pp=3", "parallel.pp_cuts=[decoder.layers.0, encoder.layers.1]"}), 3, src);
            }).find("parallel.pp_cuts: stage cut points: cut points must increase"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              validate_config(with({"parallel.pp=2", "parallel.pp_cuts=[embed]"}), 2, src);
            }).find("leaves stage 0"),
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

// Context parallelism: the layout, the mode, and what each mode needs.
TEST(Config, ContextParallelLayoutsAndModes) {
  ConfigSource src;
  const std::string dir = std::string(MOETRAIN_SOURCE_DIR) + "/configs";
  auto with = [&](std::vector<std::string> overrides) {
    overrides.insert(overrides.begin(), {"data.train=" + dir, "data.valid=" + dir});
    return load_config(kTiny, overrides, &src);
  };
  EXPECT_EQ(error_of([&] { validate_config(with({"parallel.cp=2"}), 4, src); }), "(no error)");
  EXPECT_EQ(error_of([&] { validate_config(with({"parallel.cp=3"}), 4, src); }),
            "parallel: impossible layout for 4 rank(s): world size 4 is not divisible by tp*pp*cp = 3");
  EXPECT_EQ(error_of([&] {
              validate_config(with({"parallel.cp=2", "parallel.cp_mode=ulysses"}), 2, src);
            }),
            "parallel.cp_mode: 'ulysses' is not one of all_to_all, ring (--set parallel.cp_mode=ulysses)");
  // The tiny model has 4 heads: all_to_all over tp * cp = 8 ranks cannot give each whole heads.
  EXPECT_EQ(error_of([&] {
              validate_config(with({"parallel.cp=4", "parallel.tp=2"}), 8, src);
            }),
            "parallel.cp: all_to_all gives each of the tp * cp = 8 ranks whole heads, but model.n_heads = 4 does not "
            "divide evenly (cp_mode: ring works with any head count) (--set parallel.cp=4)");
  EXPECT_EQ(error_of([&] {
              validate_config(with({"parallel.cp=4", "parallel.tp=2", "parallel.cp_mode=ring"}), 8, src);
            }),
            "(no error)");
  EXPECT_EQ(error_of([&] {
              validate_config(with({"parallel.cp=2", "model.max_positions=510"}), 2, src);
            }),
            "parallel.cp: each sequence is padded to a multiple of 2 * cp = 4, so model.max_positions (510) must be "
            "one (--set parallel.cp=2)");
  EXPECT_NE(error_of([&] {
              validate_config(with({"parallel.cp=2", "parallel.cp_mode=ring", "model.attention_dropout=0.1"}), 2, src);
            }).find("parallel.cp_mode: ring attention has no attention dropout"),
            std::string::npos);
}

// distill: its keys, checks and round trip.
TEST(Config, DistillSettings) {
  ConfigSource src;
  const std::string dir = std::string(MOETRAIN_SOURCE_DIR) + "/configs";
  auto with = [&](std::vector<std::string> overrides) {
    overrides.insert(overrides.begin(), {"data.train=" + dir, "data.valid=" + dir});
    return load_config(kTiny, overrides, &src);
  };
  const auto c = with({"distill.teacher=runs/teacher", "distill.temperature=2", "distill.top_k=16"});
  EXPECT_EQ(c.distill.teacher, "runs/teacher");
  EXPECT_DOUBLE_EQ(c.distill.temperature, 2);
  EXPECT_DOUBLE_EQ(c.distill.alpha, 0.5);
  EXPECT_EQ(c.distill.top_k, 16);
  EXPECT_EQ(error_of([&] { validate_config(c, 2, src); }), "(no error)");
  EXPECT_EQ(load_config_text(config_to_yaml(c), "round trip").distill.top_k, 16);
  EXPECT_EQ(error_of([&] {
              validate_config(with({"distill.teacher=t", "distill.temperature=0"}), 1, src);
            }),
            "distill.temperature: must be positive (--set distill.temperature=0)");
  EXPECT_EQ(error_of([&] {
              validate_config(with({"distill.teacher=t", "parallel.pp=2"}), 2, src);
            }),
            "parallel.pp: must be 1 with distill.teacher (the teacher is replicated on every rank, and the KL needs "
            "each token's whole-vocabulary logits; use data parallelism and ZeRO) (--set parallel.pp=2)");
  // Without a teacher the other keys are not checked.
  EXPECT_EQ(error_of([&] { validate_config(with({"distill.alpha=7"}), 1, src); }), "(no error)");
}

// A phase's name names its TensorBoard folder: a plain name, once.
TEST(Config, PhaseNamesNameFolders) {
  ConfigSource src;
  const std::string dir = std::string(MOETRAIN_SOURCE_DIR) + "/configs";
  auto with = [&](std::vector<std::string> overrides) {
    overrides.insert(overrides.begin(), {"data.train=" + dir, "data.valid=" + dir});
    return load_config(kTiny, overrides, &src);
  };

  EXPECT_EQ(error_of([&] { validate_config(with({"phases=[{name: a/b, steps: 2}]"}), 1, src); }),
            "phases[0].name: 'a/b' must be letters, digits, '.', '_' or '-' (it names a folder) (--set phases=[{name: "
            "a/b, steps: 2}])");
  EXPECT_EQ(error_of([&] { validate_config(with({"phases=[{name: x, steps: 2}, {name: x, steps: 1}]"}), 1, src); }),
            "phases[1].name: 'x' names an earlier phase too (--set phases=[{name: x, steps: 2}, {name: x, steps: 1}])");
  EXPECT_EQ(error_of([&] { validate_config(with({"phases=[{steps: 2}, {name: w-2.b_c, steps: 1}]"}), 1, src); }),
            "(no error)");
}

TEST(Config, ResolvedYamlRoundTrips) {
  const auto c = load_config(kTiny, {"optim.lr=0.005", "finetune.freeze=[encoder.layers.0]"});
  const auto text = config_to_yaml(c);
  const auto path = write_temp("resolved.yaml", text);
  const auto again = load_config(path, {});
  EXPECT_EQ(config_to_yaml(again), text);
  EXPECT_DOUBLE_EQ(again.optim.lr, 0.005);
  EXPECT_EQ(again.finetune.freeze, std::vector<std::string>{"encoder.layers.0"});

  // A data mixture round-trips too (a checkpoint records its run's config).
  const auto mixed = load_config(kTiny, {"data.train=\"\"",
                                         "data.mixture=[{path: /a/web, weight: 0.7}, "
                                         "{path: /b/code, weight: 0.3, name: source}]"});
  const auto mixed_text = config_to_yaml(mixed);
  const auto mixed_again = load_config_text(mixed_text, "meta.json");
  EXPECT_EQ(config_to_yaml(mixed_again), mixed_text);
  ASSERT_EQ(mixed_again.data.mixture.size(), 2u);
  EXPECT_TRUE(mixed_again.data.train.empty());
  EXPECT_EQ(mixed_again.data.mixture[0].path, "/a/web");
  EXPECT_DOUBLE_EQ(mixed_again.data.mixture[0].weight, 0.7);
  EXPECT_EQ(mixed_again.data.mixture[0].name, "");
  EXPECT_EQ(mixed_again.data.mixture[1].path, "/b/code");
  EXPECT_DOUBLE_EQ(mixed_again.data.mixture[1].weight, 0.3);
  EXPECT_EQ(mixed_again.data.mixture[1].name, "source");
}

// data.mixture: a list of {path, weight, name}; exactly one of data.train and
// data.mixture; every error names the key (the item's index) and its line.
TEST(Config, DataMixture) {
  const std::string dir = std::string(MOETRAIN_SOURCE_DIR) + "/configs";
  const std::string docs = std::string(MOETRAIN_SOURCE_DIR) + "/docs";
  auto check = [](const std::string& name, const std::string& yaml, const std::vector<std::string>& overrides = {}) {
    const auto path = write_temp(name, yaml);
    ConfigSource src;
    std::string msg = error_of([&] {
      const auto c = load_config(path, overrides, &src);
      validate_config(c, 1, src);
    });
    return std::make_pair(path, msg);
  };

  const auto ok_path =
      write_temp("mixture-ok.yaml", "data:\n  mixture:\n    - path: " + dir +
                                        "\n      weight: 3\n    - {path: " + docs + ", weight: 1, name: manual}\n");
  ConfigSource src;
  const auto ok = load_config(ok_path, {}, &src);
  EXPECT_EQ(error_of([&] { validate_config(ok, 1, src); }), "(no error)");
  ASSERT_EQ(ok.data.mixture.size(), 2u);
  EXPECT_EQ(ok.data.mixture[0].path, dir);
  EXPECT_DOUBLE_EQ(ok.data.mixture[0].weight, 3.0);
  EXPECT_EQ(moetrain::data::mixture_entry_name(ok.data.mixture[0]), "configs");
  EXPECT_EQ(moetrain::data::mixture_entry_name(ok.data.mixture[1]), "manual");
  EXPECT_EQ(src.where("data.mixture[1].weight"), " (" + ok_path + ":5)");

  auto [both, both_msg] =
      check("mixture-both.yaml", "data:\n  train: " + dir + "\n  mixture:\n    - path: " + dir + "\n");
  EXPECT_EQ(both_msg, "data.mixture: give either data.train or data.mixture, not both (data.train is " + dir + ") (" +
                          both + ":4)");
  auto [zero, zero_msg] =
      check("mixture-zero.yaml",
            "data:\n  mixture:\n    - path: " + dir + "\n      weight: 1\n    - path: " + docs + "\n      weight: 0\n");
  EXPECT_EQ(zero_msg, "data.mixture[1].weight: must be a positive number, got 0 (" + zero + ":6)");
  auto [negative, negative_msg] =
      check("mixture-set.yaml", "model:\n  d_model: 512\n", {"data.mixture=[{path: " + dir + ", weight: -1}]"});
  EXPECT_EQ(negative_msg, "data.mixture[0].weight: must be a positive number, got -1 (--set data.mixture=[{path: " +
                              dir + ", weight: -1}])");
  auto [no_path, no_path_msg] =
      check("mixture-nopath.yaml", "data:\n  mixture:\n    - path: " + dir + "\n    - weight: 2\n");
  EXPECT_EQ(no_path_msg,
            "data.mixture[1].path: is required (a directory written by `moetrain tokenize`) (" + no_path + ":4)");
  auto [missing, missing_msg] = check("mixture-missing.yaml", "data:\n  mixture:\n    - path: /nonexistent\n");
  EXPECT_EQ(missing_msg, "data.mixture[0].path: no such file or directory: /nonexistent (" + missing + ":3)");
  auto [empty, empty_msg] = check("mixture-empty.yaml", "data:\n  mixture: []\n");
  EXPECT_EQ(empty_msg,
            "data.mixture: is empty (list datasets as {path: DIR, weight: W}, or give data.train) (" + empty + ":2)");
  auto [neither, neither_msg] = check("mixture-neither.yaml", "data:\n  src_len: 64\n");
  EXPECT_EQ(neither_msg,
            "data.train: is required (a directory written by `moetrain tokenize`), or data.mixture "
            "(datasets with weights) (" +
                neither + ")");
  auto [twice, twice_msg] =
      check("mixture-twice.yaml", "data:\n  mixture:\n    - path: " + dir + "\n    - path: " + dir + "/\n");
  EXPECT_EQ(twice_msg,
            "data.mixture[1].name: 'configs' is also the name of data.mixture[0] (give each dataset its "
            "own name) (" +
                twice + ":4)");
  auto [typo, typo_msg] = check("mixture-typo.yaml", "data:\n  mixture:\n    - path: " + dir + "\n      wieght: 2\n");
  EXPECT_EQ(typo_msg, "unknown key 'data.mixture[0].wieght' (did you mean 'data.mixture[0].weight'?) (" + typo + ":4)");
  auto [type, type_msg] =
      check("mixture-type.yaml", "data:\n  mixture:\n    - path: " + dir + "\n      weight: heavy\n");
  EXPECT_EQ(type_msg, "data.mixture[0].weight: expected a number, got 'heavy' (" + type + ":4)");
  auto [scalar, scalar_msg] = check("mixture-scalar.yaml", "data:\n  mixture: " + dir + "\n");
  EXPECT_EQ(scalar_msg, "data.mixture: expected a list of mappings (" + scalar + ":2)");
  auto [item, item_msg] = check("mixture-item.yaml", "data:\n  mixture:\n    - " + dir + "\n");
  EXPECT_EQ(item_msg, "data.mixture[0]: expected a mapping of keys (" + item + ":3)");
}

TEST(Config, PhasesInheritTheRunsSectionsAndRoundTrip) {
  const std::string preset = std::string(MOETRAIN_SOURCE_DIR) + "/configs/finetune-lora.yaml";
  const auto c = load_config(preset, {});
  ASSERT_EQ(c.phases.size(), 2u);
  EXPECT_EQ(c.train.max_steps, 200);  // the phases' total: max_steps is not in the file
  EXPECT_EQ(c.phases[0].name, "lora");
  EXPECT_EQ(c.phases[0].finetune.mode, FinetuneMode::Lora);
  EXPECT_EQ(c.phases[0].lora.r, 8);  // the run's lora section
  EXPECT_DOUBLE_EQ(c.phases[0].optim.lr, 1e-3);
  EXPECT_EQ(c.phases[1].finetune.mode, FinetuneMode::Full);
  EXPECT_DOUBLE_EQ(c.phases[1].optim.lr, 1e-5);
  EXPECT_DOUBLE_EQ(c.phases[1].optim.grad_clip, 1.0);  // keys a phase does not name are the run's
  EXPECT_EQ(phase_start(c, 1), 150);
  const Config second = phase_config(c, 1);
  EXPECT_TRUE(second.phases.empty());
  EXPECT_EQ(second.train.max_steps, 200);
  EXPECT_DOUBLE_EQ(second.optim.lr, 1e-5);
  // A smaller max_steps stops the run inside the phases.
  EXPECT_EQ(load_config(preset, {"train.max_steps=120"}).train.max_steps, 120);
  EXPECT_EQ(phase_config(load_config(preset, {"train.max_steps=120"}), 0).train.max_steps, 120);
  // The recorded config reads back the same.
  const auto again = load_config_text(config_to_yaml(c), "round trip");
  ASSERT_EQ(again.phases.size(), 2u);
  EXPECT_EQ(again.train.max_steps, 200);
  EXPECT_EQ(again.phases[1].name, "full");
  EXPECT_DOUBLE_EQ(again.phases[1].optim.lr, 1e-5);
  EXPECT_EQ(again.phases[0].lora.targets, std::vector<std::string>{"all-linear"});
  EXPECT_EQ(config_to_yaml(again), config_to_yaml(c));
  // A phase's unknown key names the phase's path and the file's line.
  const auto path = write_temp("phases.yaml", "phases:\n  - steps: 3\n    optim:\n      lrr: 1\n");
  EXPECT_EQ(error_of([&] { load_config(path, {}); }),
            "unknown key 'phases[0].optim.lrr' (did you mean 'phases[0].optim.lr'?) (" + path + ":4)");
  const auto model = write_temp("phases-model.yaml", "phases:\n  - steps: 3\n    model: {d_model: 8}\n");
  EXPECT_NE(error_of([&] { load_config(model, {}); }).find("unknown key 'phases[0].model'"), std::string::npos);
}
