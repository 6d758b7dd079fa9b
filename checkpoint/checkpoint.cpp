#include "checkpoint/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <regex>
#include <sstream>
#include <vector>

#include "config/config.h"
#include "config/load.h"
#include "data/atomic_file.h"
#include "data/hdf5_file.h"
#include "models/lora.h"

namespace fs = std::filesystem;

namespace moetrain::checkpoint {
namespace {

int64_t step_of(const fs::path& dir) {
  static const std::regex pattern("step-([0-9]+)");
  std::smatch m;
  const std::string name = dir.filename().string();
  if (!std::regex_match(name, m, pattern)) return -1;
  return std::stoll(m[1]);
}

bool is_complete(const fs::path& dir) { return fs::is_regular_file(dir / "meta.json"); }

// The block of the whole parameter `name` (local shape `shape`) this rank holds.
models::ParameterSlice block_of(const std::string& name, const std::vector<int64_t>& shape,
                                const models::ParameterSlices* slices) {
  if (slices) {
    const auto it = slices->find(name);
    if (it != slices->end()) return it->second;
  }
  return {shape, std::vector<int64_t>(shape.size(), 0)};
}

models::ParameterSlice block_of(const optim::FlatParameterEntry& e, const models::ParameterSlices* slices) {
  return block_of(e.name, e.shape, slices);
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

std::string save_checkpoint(const std::string& checkpoints_dir, const CheckpointContents& c, int64_t keep,
                            parallel::Communicator& world) {
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
      for (const auto& [name, tensor] : c.frozen) {
        const std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
        const auto block = block_of(name, shape, c.slices);
        const std::string dataset = "model/" + name;
        file.write_tensor(dataset, tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous().view(-1));
        file.set_attr(dataset, "global_shape", block.global_shape);
        file.set_attr(dataset, "slice_start", block.start);
        file.set_attr(dataset, "slice_shape", shape);
        file.set_attr(dataset, "flat_offset", int64_t{0});
      }
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
    meta["loss_scale"] = {
        {"scale", c.scaler.scale}, {"good_steps", c.scaler.good_steps}, {"hysteresis_left", c.scaler.hysteresis_left}};
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

// One stored piece of a parameter: the flat range [offset, offset + length)
// of the block at `start` (shape `shape`) of the whole tensor.
struct StoredPiece {
  data::Hdf5File* file = nullptr;
  std::vector<int64_t> start, shape;
  int64_t offset = 0, length = 0;
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << c10::IntArrayRef(shape);
  return out.str();
}

// The token embedding and output projection: under TP their vocabulary is
// padded to a multiple of TP, so the last TP rank's block runs past the
// tensor's rows (padding rows, never used).
bool is_vocabulary_parameter(const std::string& dataset) {
  auto ends_with = [&](const std::string& suffix) {
    return dataset.size() >= suffix.size() &&
           dataset.compare(dataset.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with("/embed_tokens.weight") || ends_with("/lm_head.weight");
}

// The tensor a parameter's pieces make up, whatever the layout that wrote
// them: each block (a TP or EP rank's slice) assembled from its pieces (ZeRO
// shards), then put in place. `have` marks the elements some piece covered.
// `shape` is the tensor's, with room for padding rows past its end.
std::pair<torch::Tensor, torch::Tensor> assemble_whole(const std::vector<StoredPiece>& pieces,
                                                       const std::vector<int64_t>& shape, const std::string& dataset) {
  auto whole = torch::zeros(shape, torch::kFloat32);
  auto have = torch::zeros(shape, torch::kBool);
  std::map<std::pair<std::vector<int64_t>, std::vector<int64_t>>, std::pair<torch::Tensor, torch::Tensor>> blocks;
  for (const auto& p : pieces) {
    auto& [data, mask] = blocks[{p.start, p.shape}];
    if (!data.defined()) {
      data = torch::zeros(p.shape, torch::kFloat32);
      mask = torch::zeros(p.shape, torch::kBool);
    }
    data.view(-1).narrow(0, p.offset, p.length).copy_(p.file->read_slice(dataset, {0}, {p.length}));
    mask.view(-1).narrow(0, p.offset, p.length).fill_(true);
  }
  for (const auto& [where, block] : blocks) {
    torch::Tensor w = whole, h = have;
    for (size_t d = 0; d < where.first.size(); ++d) {
      w = w.narrow(static_cast<int64_t>(d), where.first[d], where.second[d]);
      h = h.narrow(static_cast<int64_t>(d), where.first[d], where.second[d]);
    }
    w.copy_(block.first);
    h.logical_or_(block.second);
  }
  return {whole, have};
}

// Fills `target` (the elements [begin, end) of this rank's flattened block of
// a parameter) from the pieces of `dataset` in every rank file. Pieces of the
// same block (the layout it was saved with) are copied straight in; otherwise
// (another TP, EP or ZeRO layout) the whole tensor is assembled and the block
// cut out of it.
void read_pieces(std::vector<data::Hdf5File>& files, const std::string& dataset, const models::ParameterSlice& block,
                 const std::vector<int64_t>& block_shape, int64_t begin, int64_t end, torch::Tensor target,
                 const std::string& dir) {
  std::vector<StoredPiece> pieces;
  for (auto& file : files) {
    if (!file.exists(dataset)) continue;
    const auto shape = file.attr_ints(dataset, "global_shape");
    if (shape != block.global_shape) {
      throw CheckpointError(file.path() + ": " + dataset + " has shape " + shape_text(shape) +
                            " but the model expects " + shape_text(block.global_shape));
    }
    StoredPiece p;
    p.file = &file;
    const bool sliced = file.has_attr(dataset, "slice_start");
    p.start = sliced ? file.attr_ints(dataset, "slice_start") : std::vector<int64_t>(shape.size(), 0);
    p.shape = sliced ? file.attr_ints(dataset, "slice_shape") : shape;
    p.offset = file.attr_int(dataset, "flat_offset");
    p.length = file.shape(dataset).at(0);
    int64_t numel = 1;
    bool inside = p.start.size() == shape.size() && p.shape.size() == shape.size();
    for (size_t d = 0; inside && d < shape.size(); ++d) {
      const bool padded = d == 0 && is_vocabulary_parameter(dataset);
      inside = p.start[d] >= 0 && p.shape[d] >= 0 && p.start[d] + p.shape[d] <= shape[d] + (padded ? p.shape[d] : 0);
      numel *= p.shape[d];
    }
    if (!inside || p.offset < 0 || p.offset + p.length > numel) {
      throw CheckpointError(file.path() + ": " + dataset + " is corrupt (its piece lies outside the tensor)");
    }
    pieces.push_back(p);
  }
  if (pieces.empty()) {
    throw CheckpointError(dir + ": missing " + dataset + " (was the checkpoint written for a different model?)");
  }

  auto covered = torch::zeros({end - begin}, torch::kBool);
  for (const auto& p : pieces) {
    if (p.start != block.start || p.shape != block_shape) continue;
    const int64_t lo = std::max(begin, p.offset), hi = std::min(end, p.offset + p.length);
    if (lo >= hi) continue;
    target.narrow(0, lo - begin, hi - lo).copy_(p.file->read_slice(dataset, {lo - p.offset}, {hi - lo}));
    covered.narrow(0, lo - begin, hi - lo).fill_(true);
  }
  if (covered.all().item<bool>()) return;

  // Room for vocabulary padding rows past the tensor's end, which need no
  // piece (a layout without them has none to give).
  std::vector<int64_t> shape = block.global_shape;
  const int64_t rows = shape.at(0);
  for (const auto& p : pieces) shape[0] = std::max(shape[0], p.start[0] + p.shape[0]);
  shape[0] = std::max(shape[0], block.start.at(0) + block_shape.at(0));
  auto [whole, have] = assemble_whole(pieces, shape, dataset);
  have.narrow(0, rows, shape[0] - rows).fill_(true);
  for (size_t d = 0; d < block.start.size(); ++d) {
    whole = whole.narrow(static_cast<int64_t>(d), block.start[d], block_shape[d]);
    have = have.narrow(static_cast<int64_t>(d), block.start[d], block_shape[d]);
  }
  const auto wanted_have = have.contiguous().view(-1).narrow(0, begin, end - begin);
  if (!wanted_have.all().item<bool>()) {
    throw CheckpointError(dir + ": " + dataset + " is incomplete: no piece holds part of the block at " +
                          shape_text(block.start) + " of shape " + shape_text(block_shape));
  }
  target.copy_(whole.contiguous().view(-1).narrow(0, begin, end - begin));
}

// "model/P.weight" -> "model/P.lora_A"; "model/P.experts_fc1_weight" -> "model/P.experts_fc1_lora_A".
std::string lora_dataset(const std::string& weight_dataset, const std::string& which) {
  const std::string suffix = "weight";
  return weight_dataset.substr(0, weight_dataset.size() - suffix.size()) + "lora_" + which;
}

// This rank's block of a weight plus scale * B A, from the blocks of B (the
// weight's rows) and A (its columns) the checkpoint's adapters hold. Works
// for [out, in] weights and stacked experts [E, out, in] alike.
torch::Tensor merged_lora_block(std::vector<data::Hdf5File>& files, const std::string& dataset,
                                const models::ParameterSlice& block, const std::vector<int64_t>& shape, double scale,
                                const std::string& dir) {
  auto numel = [](const std::vector<int64_t>& s) {
    return std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<int64_t>());
  };
  auto read_block = [&](const std::string& name, const models::ParameterSlice& b, const std::vector<int64_t>& s) {
    auto host = torch::empty({numel(s)}, torch::kFloat32);
    read_pieces(files, name, b, s, 0, numel(s), host, dir);
    return host.view(s);
  };
  auto global_shape = [&](const std::string& name) {
    for (auto& f : files) {
      if (f.exists(name)) return f.attr_ints(name, "global_shape");
    }
    throw CheckpointError(dir + ": missing " + name);
  };
  const std::string a_name = lora_dataset(dataset, "A"), b_name = lora_dataset(dataset, "B");
  const auto a_global = global_shape(a_name), b_global = global_shape(b_name);
  const size_t d = shape.size();
  if (a_global.size() != d || b_global.size() != d || d < 2) {
    throw CheckpointError(dir + ": " + a_name + " does not match " + dataset);
  }
  const int64_t r = a_global[d - 2];
  // B: the weight's rows (all r columns); A: its columns (all r rows).
  models::ParameterSlice b_block{b_global, block.start}, a_block{a_global, block.start};
  std::vector<int64_t> b_shape = shape, a_shape = shape;
  b_block.start[d - 1] = 0;
  b_shape[d - 1] = r;
  a_block.start[d - 2] = 0;
  a_shape[d - 2] = r;
  const torch::Tensor w = read_block(dataset, block, shape);
  return w + scale * torch::matmul(read_block(b_name, b_block, b_shape), read_block(a_name, a_block, a_shape));
}

}  // namespace

nlohmann::json read_checkpoint_meta(const std::string& dir) {
  const fs::path meta_path = fs::path(dir) / "meta.json";
  if (!fs::is_regular_file(meta_path)) throw CheckpointError("checkpoint " + dir + " is incomplete (no meta.json)");
  try {
    std::ifstream in(meta_path);
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(meta_path.string() + ": malformed: " + e.what());
  }
}

double checkpoint_lora_scale(const std::string& dir) {
  const nlohmann::json meta = read_checkpoint_meta(dir);
  if (!meta.contains("config") || !meta["config"].is_string()) return 0;
  const config::Config config =
      config::load_config_text(meta["config"].get<std::string>(), dir + "/meta.json (config)");
  return config.finetune.mode == config::FinetuneMode::Lora ? config.lora.scale() : 0;
}

int64_t checkpoint_phase(const std::string& dir) {
  const nlohmann::json meta = read_checkpoint_meta(dir);
  if (!meta.contains("phase") || !meta["phase"].is_object()) return -1;
  return meta["phase"].value("index", int64_t{-1});
}

LoadedCheckpoint load_checkpoint(const std::string& dir, optim::FlatParameters& params, optim::AdamW* optimizer,
                                 int64_t rank, const models::ParameterSlices* slices, const ExtraWeights& extra) {
  const fs::path meta_path = fs::path(dir) / "meta.json";
  LoadedCheckpoint loaded;
  loaded.meta = read_checkpoint_meta(dir);
  std::vector<std::string> file_names;
  try {
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
  auto stored_anywhere = [&files](const std::string& dataset) {
    return std::any_of(files.begin(), files.end(), [&](data::Hdf5File& f) { return f.exists(dataset); });
  };
  // Elements [begin, end) of this rank's flattened block of a weight, with
  // the checkpoint's LoRA adapter folded in when asked to and it has one.
  auto read_weight = [&](const std::string& name, const models::ParameterSlice& block,
                         const std::vector<int64_t>& shape, int64_t begin, int64_t end, torch::Tensor host) {
    const std::string dataset = "model/" + name;
    const bool merge =
        extra.merge_lora_scale > 0 && !models::is_lora_parameter(name) && stored_anywhere(lora_dataset(dataset, "A"));
    if (!merge) {
      read_pieces(files, dataset, block, shape, begin, end, host, dir);
      return;
    }
    host.copy_(merged_lora_block(files, dataset, block, shape, extra.merge_lora_scale, dir)
                   .view(-1)
                   .narrow(0, begin, end - begin));
  };
  const auto device = params.master().device();
  for (const auto& e : params.entries()) {
    const auto piece = params.local_piece(e);
    const int64_t len = piece.end - piece.begin;
    if (len == 0) continue;
    if (extra.adapters_may_be_absent && models::is_lora_parameter(e.name) && !stored_anywhere("model/" + e.name)) {
      continue;
    }
    auto load = [&](const std::string& group, torch::Tensor& buffer) {
      auto host = torch::empty({len}, torch::kFloat32);
      if (group == "model/") {
        read_weight(e.name, block_of(e, slices), e.shape, piece.begin, piece.end, host);
      } else {
        read_pieces(files, group + e.name, block_of(e, slices), e.shape, piece.begin, piece.end, host, dir);
      }
      buffer.narrow(0, piece.master_offset, len).copy_(host.to(device));
    };
    load("model/", params.master());
    if (optimizer) {
      load("optim/exp_avg/", optimizer->exp_avg());
      load("optim/exp_avg_sq/", optimizer->exp_avg_sq());
    }
  }
  for (const auto& [name, tensor] : extra.frozen) {
    const std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
    auto host = torch::empty({tensor.numel()}, torch::kFloat32);
    read_weight(name, block_of(name, shape, slices), shape, 0, tensor.numel(), host);
    tensor.detach().copy_(host.view(tensor.sizes()).to(tensor.device(), tensor.scalar_type()));
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

}  // namespace moetrain::checkpoint
