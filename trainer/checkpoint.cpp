#include "trainer/checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <vector>

#include "data/atomic_file.h"
#include "data/hdf5_file.h"

namespace fs = std::filesystem;

namespace moetrain::trainer {
namespace {

int64_t step_of(const fs::path& dir) {
  static const std::regex pattern("step-([0-9]+)");
  std::smatch m;
  const std::string name = dir.filename().string();
  if (!std::regex_match(name, m, pattern)) return -1;
  return std::stoll(m[1]);
}

bool is_complete(const fs::path& dir) { return fs::is_regular_file(dir / "meta.json"); }

// The block of the whole parameter entry e holds on this rank.
models::ParameterSlice block_of(const optim::FlatParameterEntry& e, const models::ParameterSlices* slices) {
  if (slices) {
    const auto it = slices->find(e.name);
    if (it != slices->end()) return it->second;
  }
  return {e.shape, std::vector<int64_t>(e.shape.size(), 0)};
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

std::string rank_file_name(int64_t rank) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "rank-%05lld.h5", static_cast<long long>(rank));
  return buf;
}

namespace {

// Writes this rank's pieces of `buffer` (laid out like params.master()) as
// `<group><param>` datasets with the attributes that place each piece in its
// whole parameter.
void write_pieces(data::Hdf5File& file, const std::string& group, const optim::FlatParameters& params,
                  const torch::Tensor& buffer, const models::ParameterSlices* slices,
                  const std::function<bool(const optim::FlatParameterEntry&)>& writes_entry) {
  const auto host = buffer.detach().to(torch::kCPU);
  for (const auto& e : params.entries()) {
    const auto piece = params.local_piece(e);
    const int64_t len = piece.end - piece.begin;
    if (len == 0 || (writes_entry && !writes_entry(e))) continue;
    const auto block = block_of(e, slices);
    const std::string dataset = group + e.name;
    file.write_tensor(dataset, host.narrow(0, piece.master_offset, len));
    file.set_attr(dataset, "global_shape", block.global_shape);
    file.set_attr(dataset, "slice_start", block.start);
    file.set_attr(dataset, "slice_shape", e.shape);
    file.set_attr(dataset, "flat_offset", piece.begin);
  }
}

}  // namespace

std::string save_checkpoint(const std::string& checkpoints_dir, const CheckpointContents& c,
                            int64_t keep, parallel::Communicator& world) {
  const std::string name = checkpoint_name(c.step);
  const fs::path final_dir = fs::path(checkpoints_dir) / name;
  const fs::path partial = fs::path(checkpoints_dir) / (name + ".partial");
  const bool leader = world.rank() == 0;
  if (leader) {
    fs::create_directories(checkpoints_dir);
    data::remove_tree(partial.string());
    fs::create_directories(partial);
  }
  world.barrier();

  {
    data::Hdf5File file((partial / rank_file_name(world.rank())).string(), data::Hdf5File::Mode::Create);
    if (c.write_state) {
      const auto& params = *c.params;
      write_pieces(file, "model/", params, params.master(), c.slices, c.writes_entry);
      write_pieces(file, "optim/exp_avg/", params, c.optimizer->exp_avg(), c.slices, c.writes_entry);
      write_pieces(file, "optim/exp_avg_sq/", params, c.optimizer->exp_avg_sq(), c.slices, c.writes_entry);
      file.set_attr("/", "optimizer_steps", c.optimizer->steps_taken());
    }
    file.write_tensor("rng/cpu", c.rng_state);
    if (c.cuda_rng_state.defined()) file.write_tensor("rng/cuda", c.cuda_rng_state);
    for (size_t i = 0; i < c.tp_rng_states.size(); ++i) {
      file.write_tensor("rng/tp/" + std::to_string(i), c.tp_rng_states[i]);
    }
    file.set_attr("/", "step", c.step);
    file.set_attr("/", "rank", world.rank());
    file.flush();
  }
  world.barrier();  // every rank file is complete before the commit marker

  if (leader) {
    nlohmann::json meta = c.meta;
    meta["format"] = "moetrain-checkpoint";
    meta["format_version"] = 1;
    meta["step"] = c.step;
    meta["world_size"] = world.size();
    std::vector<std::string> files;
    for (int64_t r = 0; r < world.size(); ++r) files.push_back(rank_file_name(r));
    meta["files"] = files;
    meta["loss_scale"] = {{"scale", c.scaler.scale},
                          {"good_steps", c.scaler.good_steps},
                          {"hysteresis_left", c.scaler.hysteresis_left}};
    data::write_file_atomically((partial / "meta.json").string(), meta.dump(2) + "\n");

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
    data::write_file_atomically((fs::path(checkpoints_dir) / "latest").string(), name + "\n");

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
  }
  world.barrier();
  return final_dir.string();
}

void save_gradient_dump(const std::string& dir, const optim::FlatParameters& params, const torch::Tensor& grads,
                        const models::ParameterSlices* slices,
                        const std::function<bool(const optim::FlatParameterEntry&)>& writes_entry, int64_t step,
                        parallel::Communicator& world) {
  if (world.rank() == 0) {
    data::remove_tree(dir);
    fs::create_directories(dir);
  }
  world.barrier();
  {
    data::Hdf5File file((fs::path(dir) / rank_file_name(world.rank())).string(), data::Hdf5File::Mode::Create);
    write_pieces(file, "model/", params, grads, slices, writes_entry);
    file.set_attr("/", "step", step);
    file.flush();
  }
  world.barrier();
  if (world.rank() == 0) {
    std::vector<std::string> files;
    for (int64_t r = 0; r < world.size(); ++r) files.push_back(rank_file_name(r));
    const nlohmann::json meta = {{"format", "moetrain-gradients"}, {"step", step}, {"files", files}};
    data::write_file_atomically((fs::path(dir) / "meta.json").string(), meta.dump(2) + "\n");
  }
  world.barrier();
}

namespace {

// Fills `target` (the elements [begin, end) of a flattened parameter) from the
// pieces of `dataset` in every rank file.
void read_pieces(std::vector<data::Hdf5File>& files, const std::string& dataset,
                 const models::ParameterSlice& block, const std::vector<int64_t>& block_shape, int64_t begin,
                 int64_t end, torch::Tensor target, const std::string& dir) {
  int64_t covered = 0;
  bool other_blocks = false;
  for (auto& file : files) {
    if (!file.exists(dataset)) continue;
    const auto stored_shape = file.attr_ints(dataset, "global_shape");
    if (stored_shape != block.global_shape) {
      std::ostringstream msg;
      msg << file.path() << ": " << dataset << " has shape " << c10::IntArrayRef(stored_shape)
          << " but the model expects " << c10::IntArrayRef(block.global_shape);
      throw CheckpointError(msg.str());
    }
    // Pieces of other blocks (another TP or EP rank's slice) do not apply.
    const bool sliced = file.has_attr(dataset, "slice_start");
    const auto start = sliced ? file.attr_ints(dataset, "slice_start") : std::vector<int64_t>(stored_shape.size(), 0);
    const auto shape = sliced ? file.attr_ints(dataset, "slice_shape") : stored_shape;
    if (start != block.start || shape != block_shape) {
      other_blocks = true;
      continue;
    }
    const int64_t offset = file.attr_int(dataset, "flat_offset");
    const int64_t length = file.shape(dataset).at(0);
    const int64_t lo = std::max(begin, offset), hi = std::min(end, offset + length);
    if (lo >= hi) continue;
    const auto piece = file.read_slice(dataset, {lo - offset}, {hi - lo});
    target.narrow(0, lo - begin, hi - lo).copy_(piece);
    covered += hi - lo;
  }
  if (covered != end - begin) {
    if (other_blocks) {
      std::ostringstream msg;
      msg << dir << ": " << dataset << " was saved split differently (no piece holds the block at "
          << c10::IntArrayRef(block.start) << " of shape " << c10::IntArrayRef(block_shape)
          << "); resume under the tensor- and expert-parallel layout it was saved with";
      throw CheckpointError(msg.str());
    }
    throw CheckpointError(dir + ": missing " + dataset +
                          " (was the checkpoint written for a different model?)");
  }
}

}  // namespace

LoadedCheckpoint load_checkpoint(const std::string& dir, optim::FlatParameters& params,
                                 optim::AdamW* optimizer, int64_t rank, const models::ParameterSlices* slices) {
  const fs::path meta_path = fs::path(dir) / "meta.json";
  if (!fs::is_regular_file(meta_path)) {
    throw CheckpointError("checkpoint " + dir + " is incomplete (no meta.json)");
  }
  LoadedCheckpoint loaded;
  std::vector<std::string> file_names;
  try {
    std::ifstream in(meta_path);
    loaded.meta = nlohmann::json::parse(in);
    loaded.step = loaded.meta.at("step").get<int64_t>();
    const auto& ls = loaded.meta.at("loss_scale");
    loaded.scaler.scale = ls.at("scale").get<double>();
    loaded.scaler.good_steps = ls.at("good_steps").get<int64_t>();
    loaded.scaler.hysteresis_left = ls.at("hysteresis_left").get<int64_t>();
    file_names = loaded.meta.at("files").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(meta_path.string() + ": malformed: " + e.what());
  }

  std::vector<data::Hdf5File> files;
  for (const auto& name : file_names) {
    const fs::path path = fs::path(dir) / name;
    if (!fs::is_regular_file(path)) throw CheckpointError(path.string() + ": missing rank file");
    files.emplace_back(path.string(), data::Hdf5File::Mode::Read);
  }
  torch::NoGradGuard no_grad;
  const auto device = params.master().device();
  for (const auto& e : params.entries()) {
    const auto piece = params.local_piece(e);
    const int64_t len = piece.end - piece.begin;
    if (len == 0) continue;
    auto load = [&](const std::string& group, torch::Tensor& buffer) {
      auto host = torch::empty({len}, torch::kFloat32);
      read_pieces(files, group + e.name, block_of(e, slices), e.shape, piece.begin, piece.end, host, dir);
      buffer.narrow(0, piece.master_offset, len).copy_(host.to(device));
    };
    load("model/", params.master());
    if (optimizer) {
      load("optim/exp_avg/", optimizer->exp_avg());
      load("optim/exp_avg_sq/", optimizer->exp_avg_sq());
    }
  }
  if (optimizer) {
    for (auto& file : files) {
      if (file.has_attr("/", "optimizer_steps")) {
        optimizer->set_steps_taken(file.attr_int("/", "optimizer_steps"));
        break;
      }
    }
  }
  const size_t own = rank < static_cast<int64_t>(files.size()) ? static_cast<size_t>(rank) : 0;
  if (files[own].exists("rng/cpu")) loaded.rng_state = files[own].read_tensor("rng/cpu");
  if (files[own].exists("rng/cuda")) loaded.cuda_rng_state = files[own].read_tensor("rng/cuda");
  for (int i = 0; files[own].exists("rng/tp/" + std::to_string(i)); ++i) {
    loaded.tp_rng_states.push_back(files[own].read_tensor("rng/tp/" + std::to_string(i)));
  }
  return loaded;
}

}  // namespace moetrain::trainer
