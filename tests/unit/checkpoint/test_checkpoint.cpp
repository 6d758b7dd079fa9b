#include <gtest/gtest.h>
#include <hdf5.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "checkpoint/checkpoint.h"
#include "checkpoint/rank_file.h"
#include "checkpoint/verify.h"
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

namespace {
// Flips one bit in the middle of a contiguous dataset's stored bytes.
void flip_stored_bit(const fs::path& file, const std::string& dataset) {
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t d = H5Dopen2(f, dataset.c_str(), H5P_DEFAULT);
  const haddr_t offset = H5Dget_offset(d);
  const hsize_t size = H5Dget_storage_size(d);
  H5Dclose(d);
  H5Fclose(f);
  ASSERT_NE(offset, HADDR_UNDEF);
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(static_cast<std::streamoff>(offset + size / 2));
  char byte = 0;
  io.read(&byte, 1);
  byte = static_cast<char>(byte ^ 1);
  io.seekp(static_cast<std::streamoff>(offset + size / 2));
  io.write(&byte, 1);
}

std::string load_error(const std::string& path) {
  Fixture b;
  try {
    checkpoint::load_checkpoint(path, b.params, &b.adam);
  } catch (const checkpoint::CheckpointError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(CheckpointIntegrity, EveryDatasetCarriesAChecksumAndTheFileAManifest) {
  const auto dir = fresh_dir("checksums");
  Fixture a;
  const auto path = checkpoint::save_checkpoint(dir.string(), a.contents(3), 0, world());
  checkpoint::RankFileReader reader((fs::path(path) / "rank-00000.h5").string());
  EXPECT_TRUE(reader.checked());
  const std::set<std::string> expected{"model/layer.weight",
                                       "model/layer.bias",
                                       "optim/exp_avg/layer.weight",
                                       "optim/exp_avg/layer.bias",
                                       "optim/exp_avg_sq/layer.weight",
                                       "optim/exp_avg_sq/layer.bias",
                                       "rng/cpu"};
  EXPECT_EQ(reader.datasets(), expected);
  const auto& weight = a.params.entries().at(0);
  ASSERT_EQ(weight.name, "layer.weight");
  EXPECT_EQ(reader.file().attr_string("model/layer.weight", "xxh64"),
            checkpoint::checksum_of(a.params.master().narrow(0, a.params.local_piece(weight).master_offset, 12)));
  const auto check = checkpoint::verify_checkpoint(path);
  EXPECT_TRUE(check.ok()) << check.first_problem();
  ASSERT_EQ(check.files.size(), 1u);
  EXPECT_EQ(check.files[0].datasets, 7);
}

TEST(CheckpointIntegrity, AFlippedBitNamesTheFileAndTensor) {
  const auto dir = fresh_dir("flipped");
  Fixture a;
  const auto path = checkpoint::save_checkpoint(dir.string(), a.contents(3), 0, world());
  const auto file = fs::path(path) / "rank-00000.h5";
  flip_stored_bit(file, "optim/exp_avg/layer.bias");
  const std::string error = load_error(path);
  EXPECT_NE(error.find(file.string() + ": optim/exp_avg/layer.bias fails its checksum"), std::string::npos) << error;
  const auto check = checkpoint::verify_checkpoint(path);
  EXPECT_FALSE(check.ok());
  EXPECT_NE(check.first_problem().find("optim/exp_avg/layer.bias fails its checksum"), std::string::npos);
  EXPECT_EQ(check.files.at(0).datasets, 6);  // the other six verify
}

TEST(CheckpointIntegrity, VerifyChecksMetaAgainstTheFilesPresent) {
  const auto dir = fresh_dir("filelist");
  Fixture a;
  const auto path = checkpoint::save_checkpoint(dir.string(), a.contents(3), 0, world());
  fs::copy_file(fs::path(path) / "rank-00000.h5", fs::path(path) / "rank-00001.h5");
  auto check = checkpoint::verify_checkpoint(path);
  EXPECT_NE(check.first_problem().find("rank-00001.h5: a rank file meta.json does not list"), std::string::npos)
      << check.first_problem();
  fs::remove(fs::path(path) / "rank-00001.h5");
  fs::remove(fs::path(path) / "rank-00000.h5");
  check = checkpoint::verify_checkpoint(path);
  EXPECT_NE(check.first_problem().find("rank-00000.h5: missing rank file"), std::string::npos) << check.first_problem();
  EXPECT_NE(load_error(path).find("rank-00000.h5: missing rank file"), std::string::npos);
}

TEST(CheckpointIntegrity, AutomaticResumeSkipsADamagedNewestCheckpoint) {
  const auto out = fresh_dir("fallback");
  const auto dir = out / "checkpoints";
  Fixture a;
  checkpoint::save_checkpoint(dir.string(), a.contents(2), 0, world());
  const auto newest = checkpoint::save_checkpoint(dir.string(), a.contents(4), 0, world());
  EXPECT_EQ(*checkpoint::checkpoint_to_resume(out.string(), "", world()), newest);
  flip_stored_bit(fs::path(newest) / "rank-00000.h5", "model/layer.weight");
  EXPECT_EQ(fs::path(*checkpoint::checkpoint_to_resume(out.string(), "", world())).filename(), "step-000002");
  // An explicit choice is returned as given: loading it then fails.
  EXPECT_EQ(*checkpoint::checkpoint_to_resume(out.string(), newest, world()), newest);
  flip_stored_bit(dir / "step-000002" / "rank-00000.h5", "rng/cpu");
  EXPECT_THROW(checkpoint::checkpoint_to_resume(out.string(), "", world()), checkpoint::CheckpointError);
}

TEST(CheckpointIntegrity, FilesWithoutChecksumsStillLoad) {
  // A checkpoint written before checksums: the same datasets and attributes,
  // no manifest, no `xxh64`, format_version 1.
  const auto dir = fresh_dir("format1") / "step-000001";
  fs::create_directories(dir);
  Fixture a;
  {
    data::Hdf5File f((dir / "rank-00000.h5").string(), data::Hdf5File::Mode::Create);
    for (const std::string group : {"model/", "optim/exp_avg/", "optim/exp_avg_sq/"}) {
      const auto& buffer = group == "model/"           ? a.params.master()
                           : group == "optim/exp_avg/" ? a.adam.exp_avg()
                                                       : a.adam.exp_avg_sq();
      for (const auto& e : a.params.entries()) {
        const std::string name = group + e.name;
        f.write_tensor(name, buffer.narrow(0, a.params.local_piece(e).master_offset, e.numel));
        f.set_attr(name, "global_shape", e.shape);
        f.set_attr(name, "flat_offset", int64_t{0});
      }
    }
    f.set_attr("/", "step", int64_t{1});
  }
  data::write_file_atomically((dir / "meta.json").string(),
                              R"({"format_version": 1, "step": 1, "files": ["rank-00000.h5"],
                                  "loss_scale": {"scale": 1.0, "good_steps": 0, "hysteresis_left": 0}})");
  Fixture b;
  checkpoint::load_checkpoint(dir.string(), b.params, &b.adam);
  EXPECT_TRUE(torch::equal(a.params.master(), b.params.master()));
  const auto check = checkpoint::verify_checkpoint(dir.string());
  EXPECT_TRUE(check.ok()) << check.first_problem();
  EXPECT_FALSE(check.files.at(0).checksums);
  EXPECT_EQ(check.files.at(0).datasets, 6);
}
