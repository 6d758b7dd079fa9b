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

#include "checkpoint/pieces.h"
#include "checkpoint/rank_file.h"
#include "data/atomic_file.h"
#include "data/hdf5_file.h"
#include "models/lora.h"
#include "parallel/byte_exchange.h"

namespace fs = std::filesystem;

namespace moetrain::checkpoint {

namespace {

// An HDF5 write failure carries HDF5's whole report (time, buffer address,
// sizes); keep the file, the object and the system's reason.
std::string short_reason(const std::string& what) {
  const std::string key = "error message = '";
  const size_t at = what.find(key);
  const size_t cut = what.find(" (file write failed");
  if (at == std::string::npos || cut == std::string::npos) return what;
  const size_t end = what.find('\'', at + key.size());
  return what.substr(0, cut) + ": " + what.substr(at + key.size(), end - at - key.size());
}

// Runs `body`; returns "" or the one line of what it threw.
std::string attempt(const std::function<void()>& body) {
  try {
    body();
    return "";
  } catch (const std::exception& e) {
    return short_reason(e.what());
  }
}

// The first failure in rank order, the same on every rank ("" when none).
// Collective: it also orders every rank's part before what follows.
std::string agreed_failure(parallel::Communicator& world, const std::string& mine) {
  const auto [rank, failure] = parallel::first_failure(world, mine);
  if (rank < 0 || world.size() == 1) return failure;
  return "rank " + std::to_string(rank) + ": " + failure;
}

// One rank's file of the checkpoint in `dir`.
void write_rank_file(const fs::path& dir, const CheckpointContents& c, int64_t rank) {
  RankFileWriter writer((dir / rank_file_name(rank)).string());
  auto& file = writer.file();
  if (c.write_state) {
    const auto& params = *c.params;
    write_pieces(writer, "model/", params, params.master(), c.slices, c.writes_entry);
    for (const auto& [name, tensor] : c.frozen) {
      const std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
      write_piece(writer, "model/" + name, tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous().view(-1),
                  block_of(name, shape, c.slices), shape, 0);
    }
    write_pieces(writer, "optim/exp_avg/", params, c.optimizer->exp_avg(), c.slices, c.writes_entry);
    write_pieces(writer, "optim/exp_avg_sq/", params, c.optimizer->exp_avg_sq(), c.slices, c.writes_entry);
    file.set_attr("/", "optimizer_steps", c.optimizer->steps_taken());
  }
  writer.write("rng/cpu", c.rng_state);
  if (c.cuda_rng_state.defined()) writer.write("rng/cuda", c.cuda_rng_state);
  for (size_t i = 0; i < c.tp_rng_states.size(); ++i) writer.write("rng/tp/" + std::to_string(i), c.tp_rng_states[i]);
  file.set_attr("/", "step", c.step);
  file.set_attr("/", "rank", rank);
  writer.finish();
}

// Rank 0, once every rank file is whole: meta.json (the commit marker), the
// rename into place, `latest`, and pruning to the newest `keep`.
void commit_checkpoint(const fs::path& checkpoints_dir, const fs::path& partial, const std::string& name,
                       const CheckpointContents& c, int64_t keep, int64_t world_size) {
  nlohmann::json meta = c.meta;
  meta["format"] = "moetrain-checkpoint";
  meta["format_version"] = 2;  // 2: rank files carry checksums (rank_file.h)
  meta["step"] = c.step;
  meta["world_size"] = world_size;
  std::vector<std::string> files;
  for (int64_t r = 0; r < world_size; ++r) files.push_back(rank_file_name(r));
  meta["files"] = files;
  meta["loss_scale"] = {
      {"scale", c.scaler.scale}, {"good_steps", c.scaler.good_steps}, {"hysteresis_left", c.scaler.hysteresis_left}};
  data::write_file_atomically((partial / "meta.json").string(), meta.dump(2) + "\n");

  // Replace an older checkpoint of the same step only once the new one is whole.
  const fs::path final_dir = checkpoints_dir / name;
  if (fs::exists(final_dir)) {
    const fs::path old = checkpoints_dir / (name + ".old");
    data::remove_tree(old.string());
    fs::rename(final_dir, old);
    fs::rename(partial, final_dir);
    data::remove_tree(old.string());
  } else {
    fs::rename(partial, final_dir);
  }
  data::write_file_atomically((checkpoints_dir / "latest").string(), name + "\n");

  if (keep > 0) {
    const auto complete = complete_checkpoints(checkpoints_dir.string());
    for (size_t i = 0; i + static_cast<size_t>(keep) < complete.size(); ++i) data::remove_tree(complete[i].second);
  }
}

}  // namespace

std::string save_checkpoint(const std::string& checkpoints_dir, const CheckpointContents& c, int64_t keep,
                            parallel::Communicator& world) {
  const std::string name = checkpoint_name(c.step);
  const fs::path partial = fs::path(checkpoints_dir) / (name + ".partial");
  const bool leader = world.rank() == 0;
  // Each stage ends with every rank agreeing whether some rank failed in it.
  const auto abandon_on = [&](const std::string& failure) {
    if (failure.empty()) return;
    if (leader) attempt([&] { data::remove_tree(partial.string()); });
    world.barrier();  // nobody goes on before the partial directory is gone
    throw CheckpointWriteError("checkpoint " + name + " not saved: " + failure +
                               " (the earlier checkpoints are unchanged)");
  };
  abandon_on(agreed_failure(world, leader ? attempt([&] {
                              fs::create_directories(checkpoints_dir);
                              data::remove_tree(partial.string());
                              fs::create_directories(partial);
                            })
                                          : ""));
  abandon_on(agreed_failure(world, attempt([&] { write_rank_file(partial, c, world.rank()); })));
  abandon_on(agreed_failure(
      world, leader ? attempt([&] { commit_checkpoint(checkpoints_dir, partial, name, c, keep, world.size()); }) : ""));
  return (fs::path(checkpoints_dir) / name).string();
}

void save_weights_checkpoint(const std::string& dir, int64_t step,
                             const std::vector<std::pair<std::string, torch::Tensor>>& weights,
                             const nlohmann::json& extra_meta) {
  if (fs::exists(dir)) throw CheckpointError(dir + ": exists already");
  fs::create_directories(dir);
  RankFileWriter writer((fs::path(dir) / rank_file_name(0)).string());
  for (const auto& [name, tensor] : weights) {
    const std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
    write_piece(writer, "model/" + name, tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous().view(-1),
                block_of(name, shape, nullptr), shape, 0);
  }
  writer.file().set_attr("/", "step", step);
  writer.file().set_attr("/", "rank", int64_t{0});
  writer.finish();
  nlohmann::json meta = extra_meta;
  meta["format"] = "moetrain-checkpoint";
  meta["format_version"] = 2;
  meta["step"] = step;
  meta["world_size"] = 1;
  meta["files"] = {rank_file_name(0)};
  meta["weights_only"] = true;
  meta["loss_scale"] = {{"scale", 1.0}, {"good_steps", 0}, {"hysteresis_left", 0}};
  data::write_file_atomically((fs::path(dir) / "meta.json").string(), meta.dump(2) + "\n");
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
    RankFileWriter writer((fs::path(dir) / rank_file_name(world.rank())).string());
    write_pieces(writer, "model/", params, grads, slices, writes_entry);
    writer.file().set_attr("/", "step", step);
    writer.finish();
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

// meta.json's step, loss scaler and rank file names.
std::vector<std::string> read_meta_fields(const std::string& dir, LoadedCheckpoint& loaded) {
  loaded.meta = read_checkpoint_meta(dir);
  try {
    const std::string where = (fs::path(dir) / "meta.json").string();
    loaded.step = meta_int(loaded.meta, "step", where);
    const auto& ls = loaded.meta.at("loss_scale");
    loaded.scaler.scale = ls.at("scale").get<double>();
    loaded.scaler.good_steps = meta_int(ls, "good_steps", where + " (loss_scale)");
    loaded.scaler.hysteresis_left = meta_int(ls, "hysteresis_left", where + " (loss_scale)");
    return loaded.meta.at("files").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError((fs::path(dir) / "meta.json").string() + ": malformed: " + e.what());
  }
}

std::vector<RankFileReader> open_rank_files(const std::string& dir, const std::vector<std::string>& names) {
  std::vector<RankFileReader> files;
  for (const auto& name : names) {
    const fs::path path = fs::path(dir) / name;
    if (!fs::is_regular_file(path)) throw CheckpointError(path.string() + ": missing rank file");
    files.emplace_back(path.string());
  }
  if (files.empty()) throw CheckpointError((fs::path(dir) / "meta.json").string() + ": lists no rank files");
  return files;
}

// The generator states rank `rank` saved (the first file's when the
// checkpoint has fewer ranks).
void read_rng_states(std::vector<RankFileReader>& files, int64_t rank, LoadedCheckpoint& loaded) {
  auto& own = files[rank < static_cast<int64_t>(files.size()) ? static_cast<size_t>(rank) : 0];
  if (own.holds("rng/cpu")) loaded.rng_state = own.read("rng/cpu");
  if (own.holds("rng/cuda")) loaded.cuda_rng_state = own.read("rng/cuda");
  for (int i = 0; own.holds("rng/tp/" + std::to_string(i)); ++i) {
    loaded.tp_rng_states.push_back(own.read("rng/tp/" + std::to_string(i)));
  }
}

LoadedCheckpoint load_verified(const std::string& dir, optim::FlatParameters& params, optim::AdamW* optimizer,
                               int64_t rank, const models::ParameterSlices* slices, const ExtraWeights& extra) {
  LoadedCheckpoint loaded;
  auto files = open_rank_files(dir, read_meta_fields(dir, loaded));
  if (optimizer && loaded.meta.contains("weights_only") && loaded.meta["weights_only"] == true) {
    throw CheckpointError(dir + " holds weights alone (no optimizer state): start a run from it with --init-from");
  }
  torch::NoGradGuard no_grad;
  auto stored_anywhere = [&files](const std::string& dataset) {
    return std::any_of(files.begin(), files.end(), [&](RankFileReader& f) { return f.holds(dataset); });
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
      if (file.file().has_attr("/", "optimizer_steps")) {
        optimizer->set_steps_taken(file.file().attr_int("/", "optimizer_steps"));
        break;
      }
    }
  }
  read_rng_states(files, rank, loaded);
  return loaded;
}

}  // namespace

LoadedCheckpoint load_checkpoint(const std::string& dir, optim::FlatParameters& params, optim::AdamW* optimizer,
                                 int64_t rank, const models::ParameterSlices* slices, const ExtraWeights& extra) {
  try {
    return load_verified(dir, params, optimizer, rank, slices, extra);
  } catch (const data::Hdf5Error& e) {
    // An attribute or dataset HDF5 cannot read: the message names the file
    // and the object.
    throw CheckpointError(std::string(e.what()) + ": the rank file is damaged");
  }
}

}  // namespace moetrain::checkpoint
