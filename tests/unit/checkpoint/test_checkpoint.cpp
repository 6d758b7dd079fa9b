#include <gtest/gtest.h>

#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "data/atomic_file.h"
#include "parallel/mpi_communicator.h"

using namespace moetrain;
namespace fs = std::filesystem;

namespace {
struct Fixture {
  torch::Tensor w = torch::randn({3, 4}).requires_grad_();
  torch::Tensor b = torch::randn({4}).requires_grad_();
  optim::FlatParameters params{{{"layer.weight", w}, {"layer.bias", b}},
                               torch::kFloat32,
                               [](const std::string&, const torch::Tensor&) { return true; }};
  optim::AdamW adam{optim::OptimConfig{}, params.master().numel(), params.master_decay_segments(),
                    params.master().options()};
  void one_step() {
    params.grads().normal_();
    adam.step(params.master(), params.grads(), 0.01);
  }
  checkpoint::CheckpointContents contents(int64_t step) {
    checkpoint::CheckpointContents c;
    c.step = step;
    c.params = &params;
    c.optimizer = &adam;
    c.scaler.scale = 1024.0;
    c.scaler.good_steps = 7;
    c.rng_state = at::detail::getDefaultCPUGenerator().get_state();
    c.meta = {{"data", {{"next_step", step}}}};
    return c;
  }
};

parallel::Communicator& world() {
  static auto comm = parallel::make_world_communicator(60.0);
  return *comm;
}

fs::path fresh_dir(const std::string& name) {
  const auto dir = fs::temp_directory_path() / ("moetrain_ckpt_" + name);
  data::remove_tree(dir.string());
  return dir;
}
}  // namespace

TEST(Checkpoint, RoundTripsWeightsMomentsScalerAndRng) {
  const auto dir = fresh_dir("roundtrip");
  Fixture a;
  a.one_step();
  a.one_step();
  const auto contents = a.contents(2);
  const auto path = checkpoint::save_checkpoint(dir.string(), contents, 3, world());
  EXPECT_EQ(fs::path(path).filename(), "step-000002");
  EXPECT_TRUE(fs::exists(dir / "latest"));

  Fixture b;  // different random weights
  const auto loaded = checkpoint::load_checkpoint(path, b.params, &b.adam);
  EXPECT_EQ(loaded.step, 2);
  EXPECT_EQ(loaded.scaler.scale, 1024.0);
  EXPECT_EQ(loaded.scaler.good_steps, 7);
  EXPECT_EQ(b.adam.steps_taken(), 2);
  EXPECT_TRUE(torch::equal(a.params.master(), b.params.master()));
  EXPECT_TRUE(torch::equal(a.adam.exp_avg(), b.adam.exp_avg()));
  EXPECT_TRUE(torch::equal(a.adam.exp_avg_sq(), b.adam.exp_avg_sq()));
  EXPECT_TRUE(torch::equal(a.w, b.w));  // the model's view follows the master
  EXPECT_TRUE(torch::equal(loaded.rng_state, contents.rng_state));
}

TEST(Checkpoint, IncompleteDirectoriesAreIgnoredAndOldOnesPruned) {
  const auto dir = fresh_dir("prune");
  Fixture a;
  for (int64_t step : {10, 20, 30}) checkpoint::save_checkpoint(dir.string(), a.contents(step), 2, world());
  EXPECT_FALSE(fs::exists(dir / "step-000010"));
  EXPECT_TRUE(fs::exists(dir / "step-000020"));
  // A newer directory without meta.json (a crash mid-save) is not "latest".
  fs::create_directories(dir / "step-000040");
  EXPECT_EQ(fs::path(*checkpoint::find_latest_checkpoint(dir.string())).filename(), "step-000030");
  EXPECT_THROW(checkpoint::resolve_checkpoint_path((dir / "step-000040").string()), checkpoint::CheckpointError);
  EXPECT_EQ(fs::path(checkpoint::resolve_checkpoint_path(dir.parent_path().string() + "/" + dir.filename().string()))
                .filename(),
            "step-000030");
}

TEST(Checkpoint, ShapeMismatchNamesTheParameter) {
  const auto dir = fresh_dir("mismatch");
  Fixture a;
  const auto path = checkpoint::save_checkpoint(dir.string(), a.contents(1), 0, world());
  auto w = torch::randn({5, 4}).requires_grad_();
  optim::FlatParameters other({{"layer.weight", w}}, torch::kFloat32,
                              [](const std::string&, const torch::Tensor&) { return true; });
  try {
    checkpoint::load_checkpoint(path, other, nullptr);
    FAIL() << "expected CheckpointError";
  } catch (const checkpoint::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("model/layer.weight has shape [3, 4] but the model expects [5, 4]"),
              std::string::npos)
        << e.what();
  }
}
