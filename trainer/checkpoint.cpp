#include "trainer/checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <vector>

#include "data/atomic_file.h"
#include "data/hdf5_file.h"

namespace fs = std::filesystem;

namespace moetrain::trainer {
namespace {

constexpr const char* kRankFile = "rank-00000.h5";

void write_text_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw CheckpointError("cannot write " + tmp.string());
  }
  fs::rename(tmp, path);
}

int64_t step_of(const fs::path& dir) {
  static const std::regex pattern("step-([0-9]+)");
  std::smatch m;
  const std::string name = dir.filename().string();
  if (!std::regex_match(name, m, pattern)) return -1;
  return std::stoll(m[1]);
}

bool is_complete(const fs::path& dir) { return fs::is_regular_file(dir / "meta.json"); }

void write_tensor_with_layout(data::Hdf5File& file, const std::string& name, const torch::Tensor& t) {
  file.write_tensor(name, t);
  file.set_attr(name, "global_shape", t.sizes().vec());
  file.set_attr(name, "offset", std::vector<int64_t>(t.dim(), 0));
}

}  // namespace

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%06lld", static_cast<long long>(step));
  return buf;
}

std::optional<std::string> find_latest_checkpoint(const std::string& checkpoints_dir) {
  if (!fs::is_directory(checkpoints_dir)) return std::nullopt;
  int64_t best = -1;
  fs::path best_dir;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir)) {
    if (!entry.is_directory()) continue;
    const int64_t step = step_of(entry.path());
    if (step > best && is_complete(entry.path())) {
      best = step;
      best_dir = entry.path();
    }
  }
  if (best < 0) return std::nullopt;
  return best_dir.string();
}

std::string resolve_checkpoint_path(const std::string& path) {
  if (!fs::exists(path)) throw CheckpointError("checkpoint not found: " + path);
  if (step_of(path) >= 0 || fs::is_regular_file(fs::path(path) / "meta.json")) {
    if (!is_complete(path)) {
      throw CheckpointError("checkpoint " + path + " is incomplete (no meta.json)");
    }
    return path;
  }
  for (const fs::path& candidate : {fs::path(path), fs::path(path) / "checkpoints"}) {
    if (auto latest = find_latest_checkpoint(candidate.string())) return *latest;
  }
  throw CheckpointError("no complete checkpoint under " + path);
}

std::string save_checkpoint(const std::string& checkpoints_dir, const CheckpointContents& c,
                            int64_t keep) {
  fs::create_directories(checkpoints_dir);
  const std::string name = checkpoint_name(c.step);
  const fs::path final_dir = fs::path(checkpoints_dir) / name;
  const fs::path partial = fs::path(checkpoints_dir) / (name + ".partial");
  data::remove_tree(partial.string());
  fs::create_directories(partial);

  {
    data::Hdf5File file((partial / kRankFile).string(), data::Hdf5File::Mode::Create);
    const auto& params = *c.params;
    const auto master = params.master().detach().to(torch::kCPU);
    const auto exp_avg = c.optimizer->exp_avg().to(torch::kCPU);
    const auto exp_avg_sq = c.optimizer->exp_avg_sq().to(torch::kCPU);
    for (const auto& e : params.entries()) {
      write_tensor_with_layout(file, "model/" + e.name, params.view(master, e));
      write_tensor_with_layout(file, "optim/exp_avg/" + e.name, params.view(exp_avg, e));
      write_tensor_with_layout(file, "optim/exp_avg_sq/" + e.name, params.view(exp_avg_sq, e));
    }
    file.write_tensor("rng/cpu", c.rng_state);
    if (c.cuda_rng_state.defined()) file.write_tensor("rng/cuda", c.cuda_rng_state);
    file.set_attr("/", "step", c.step);
    file.set_attr("/", "optimizer_steps", c.optimizer->steps_taken());
    file.flush();
  }

  nlohmann::json meta = c.meta;
  meta["format"] = "moetrain-checkpoint";
  meta["format_version"] = 1;
  meta["step"] = c.step;
  meta["files"] = {kRankFile};
  meta["loss_scale"] = {{"scale", c.scaler.scale},
                        {"good_steps", c.scaler.good_steps},
                        {"hysteresis_left", c.scaler.hysteresis_left}};
  write_text_atomically(partial / "meta.json", meta.dump(2) + "\n");

  // Replace an older checkpoint of the same step only once the new one is whole.
  if (fs::exists(final_dir)) {
    const fs::path old = fs::path(checkpoints_dir) / (name + ".old");
    data::remove_tree(old.string());
    fs::rename(final_dir, old);
    fs::rename(partial, final_dir);
    data::remove_tree(old.string());
  } else {
    fs::rename(partial, final_dir);
  }
  write_text_atomically(fs::path(checkpoints_dir) / "latest", name + "\n");

  if (keep > 0) {
    std::vector<std::pair<int64_t, fs::path>> complete;
    for (const auto& entry : fs::directory_iterator(checkpoints_dir)) {
      const int64_t step = step_of(entry.path());
      if (entry.is_directory() && step >= 0 && is_complete(entry.path())) {
        complete.emplace_back(step, entry.path());
      }
    }
    std::sort(complete.begin(), complete.end());
    for (size_t i = 0; i + static_cast<size_t>(keep) < complete.size(); ++i) {
      data::remove_tree(complete[i].second.string());
    }
  }
  return final_dir.string();
}

LoadedCheckpoint load_checkpoint(const std::string& dir, optim::FlatParameters& params,
                                 optim::AdamW* optimizer) {
  const fs::path meta_path = fs::path(dir) / "meta.json";
  if (!fs::is_regular_file(meta_path)) {
    throw CheckpointError("checkpoint " + dir + " is incomplete (no meta.json)");
  }
  LoadedCheckpoint loaded;
  try {
    std::ifstream in(meta_path);
    loaded.meta = nlohmann::json::parse(in);
    loaded.step = loaded.meta.at("step").get<int64_t>();
    const auto& ls = loaded.meta.at("loss_scale");
    loaded.scaler.scale = ls.at("scale").get<double>();
    loaded.scaler.good_steps = ls.at("good_steps").get<int64_t>();
    loaded.scaler.hysteresis_left = ls.at("hysteresis_left").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(meta_path.string() + ": malformed: " + e.what());
  }

  const fs::path rank_path = fs::path(dir) / kRankFile;
  data::Hdf5File file(rank_path.string(), data::Hdf5File::Mode::Read);
  torch::NoGradGuard no_grad;
  auto load_into = [&](const std::string& name, torch::Tensor target) {
    if (!file.exists(name)) {
      throw CheckpointError(rank_path.string() + ": missing " + name +
                            " (was the checkpoint written for a different model?)");
    }
    const auto t = file.read_tensor(name);
    if (t.sizes() != target.sizes()) {
      std::ostringstream msg;
      msg << rank_path.string() << ": " << name << " has shape " << t.sizes()
          << " but the model expects " << target.sizes();
      throw CheckpointError(msg.str());
    }
    target.copy_(t);
  };
  for (const auto& e : params.entries()) {
    load_into("model/" + e.name, params.view(params.master(), e));
    if (optimizer) {
      load_into("optim/exp_avg/" + e.name, params.view(optimizer->exp_avg(), e));
      load_into("optim/exp_avg_sq/" + e.name, params.view(optimizer->exp_avg_sq(), e));
    }
  }
  params.copy_master_to_model();
  if (optimizer) optimizer->set_steps_taken(file.attr_int("/", "optimizer_steps"));
  if (file.exists("rng/cpu")) loaded.rng_state = file.read_tensor("rng/cpu");
  if (file.exists("rng/cuda")) loaded.cuda_rng_state = file.read_tensor("rng/cuda");
  return loaded;
}

}  // namespace moetrain::trainer
