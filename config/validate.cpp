#include "config/validate.h"

#include <glob.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "models/lora.h"
#include "parallel/pipeline.h"
#include "parallel/process_grid.h"

namespace moetrain::config {
namespace {

bool path_exists(const std::string& pattern) {
  if (std::filesystem::exists(pattern)) return true;
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  const bool found = rc == 0 && g.gl_pathc > 0;
  globfree(&g);
  return found;
}

// require(ok, key, what) throws ConfigError "KEY: WHAT (file:line)" unless ok.
struct Require {
  const ConfigSource& src;
  void operator()(bool ok, const std::string& key, const std::string& what) const {
    if (!ok) throw ConfigError(key + ": " + what + src.where(key));
  }
};

// model: sizes, positions, attention, MoE.
void validate_model(const Config& c, const Require& require) {
  const auto& m = c.model;
  require(m.vocab_size >= 0, "model.vocab_size", "must be >= 0 (0: from the tokenizer)");
  require(m.d_model > 0, "model.d_model", "must be positive");
  require(m.n_heads > 0, "model.n_heads", "must be positive");
  require(m.d_model % m.n_heads == 0, "model.n_heads",
          std::to_string(m.n_heads) + " heads do not divide d_model = " + std::to_string(m.d_model));
  require(m.position != models::PositionType::Rotary || m.head_dim() % 2 == 0, "model.position",
          "rotary positions need an even head dimension (d_model / n_heads)");
  require(m.position != models::PositionType::SinusoidalFairseq || m.d_model >= 4, "model.position",
          "sinusoidal_fairseq positions need d_model >= 4");
  require(m.d_ff > 0, "model.d_ff", "must be positive");
  require(m.encoder_layers >= 1, "model.encoder_layers", "must be at least 1");
  require(m.decoder_layers >= 1, "model.decoder_layers", "must be at least 1");
  require(m.max_positions >= 1, "model.max_positions", "must be positive");
  require(m.norm_eps > 0, "model.norm_eps", "must be positive");
  require(m.local_window >= 1, "model.local_window", "must be at least 1");
  require(m.dropout >= 0 && m.dropout < 1, "model.dropout", "must be in [0, 1)");
  require(m.attention_dropout >= 0 && m.attention_dropout < 1, "model.attention_dropout", "must be in [0, 1)");
  require(m.init_std > 0, "model.init_std", "must be positive");
  require(m.moe.num_experts >= 1, "model.moe.num_experts", "must be at least 1");
  require(m.moe.top_k >= 1 && m.moe.top_k <= m.moe.num_experts, "model.moe.top_k",
          "must be between 1 and num_experts (" + std::to_string(m.moe.num_experts) + ")");
  require(m.moe.capacity_factor >= 0, "model.moe.capacity_factor", "must be >= 0 (0: dropless)");
  require(m.moe.every >= 0, "model.moe.every", "must be >= 0 (0: no MoE layers)");
  require(m.moe.d_ff_expert >= 0, "model.moe.d_ff_expert", "must be >= 0");
  require(m.moe.aux_loss_coef >= 0, "model.moe.aux_loss_coef", "must be >= 0");
  require(m.moe.z_loss_coef >= 0, "model.moe.z_loss_coef", "must be >= 0");
  require(m.moe.token_dropout >= 0 && m.moe.token_dropout < 1, "model.moe.token_dropout", "must be in [0, 1)");
  require(m.pad_id >= 0, "model.pad_id", "must be >= 0 (the tokenizer's pad id)");
}

// The batch against the parallel layout, and what each kind of parallelism
// needs of the model.
void validate_layout(const Config& c, const Require& require, int64_t world_size) {
  require(c.train.micro_batch >= 1, "train.micro_batch", "must be at least 1");
  require(c.train.global_batch >= 1, "train.global_batch", "must be at least 1");
  try {
    parallel::ProcessGrid grid(world_size, 0, c.parallel);
    require(c.train.global_batch % (c.train.micro_batch * grid.dp_size()) == 0, "train.global_batch",
            std::to_string(c.train.global_batch) + " is not divisible by micro_batch * dp = " +
                std::to_string(c.train.micro_batch) + " * " + std::to_string(grid.dp_size()));
    const int64_t per_rank = c.train.global_batch / (c.train.micro_batch * grid.dp_size());
    require(c.parallel.microbatches == 0 || c.parallel.microbatches == per_rank, "parallel.microbatches",
            std::to_string(c.parallel.microbatches) +
                " does not match train.global_batch / (train.micro_batch * dp) = " +
                std::to_string(c.train.global_batch) + " / (" + std::to_string(c.train.micro_batch) + " * " +
                std::to_string(grid.dp_size()) + ") = " + std::to_string(per_rank) + " (0: use that)");
  } catch (const parallel::LayoutError& e) {
    throw ConfigError(std::string("parallel: impossible layout for ") + std::to_string(world_size) +
                      " rank(s): " + e.what());
  }
  require(c.parallel.zero_stage >= 0 && c.parallel.zero_stage <= 3, "parallel.zero_stage", "must be 0, 1, 2 or 3");
  try {
    parallel::parse_schedule(c.parallel.schedule);
  } catch (const std::invalid_argument& e) {
    require(false, "parallel.schedule", e.what());
  }
  require(c.parallel.bucket_mb > 0, "parallel.bucket_mb", "must be positive");
  require(c.parallel.timeout_s > 0, "parallel.timeout_s", "must be positive");
  const std::string& backend = c.parallel.backend;
  require(backend == "auto" || backend == "nccl" || backend == "mpi", "parallel.backend",
          "'" + backend + "' is not one of auto, nccl, mpi");
  require(!(backend == "nccl" && c.train.device == "cpu"), "parallel.backend",
          "nccl moves GPU memory, but train.device is cpu; use auto or mpi");
  // Tensor parallelism splits heads, FFN and expert widths evenly.
  const int64_t tp = c.parallel.tp;
  if (tp > 1) {
    require(c.model.n_heads % tp == 0, "parallel.tp",
            std::to_string(tp) + " does not divide model.n_heads = " + std::to_string(c.model.n_heads));
    require(c.model.d_ff % tp == 0, "parallel.tp",
            std::to_string(tp) + " does not divide model.d_ff = " + std::to_string(c.model.d_ff));
    require(c.model.expert_ffn_dim() % tp == 0, "parallel.tp",
            std::to_string(tp) + " does not divide the expert width " + std::to_string(c.model.expert_ffn_dim()));
  }
  // Expert parallelism splits every MoE layer's experts evenly.
  const int64_t ep = c.parallel.ep;
  if (ep > 1) {
    require(c.model.moe.num_experts % ep == 0, "parallel.ep",
            std::to_string(ep) + " does not divide model.moe.num_experts = " + std::to_string(c.model.moe.num_experts));
  }
  // Pipeline parallelism cuts the model's units (embed, each layer, the
  // final norms, lm_head) into pp non-empty stages.
  const auto& m = c.model;
  const int64_t pp = c.parallel.pp;
  const int64_t units = m.num_pipeline_units();
  if (pp > 1) {
    require(pp <= units, "parallel.pp",
            std::to_string(pp) + " stages but the model has only " + std::to_string(units) +
                " pipeline units (embed, " + std::to_string(m.encoder_layers) + " encoder layers, encoder norm, " +
                std::to_string(m.decoder_layers) + " decoder layers, decoder norm, lm_head)");
  }
  require(
      c.parallel.pp_cuts.empty() || static_cast<int64_t>(c.parallel.pp_cuts.size()) == pp - 1, "parallel.pp_cuts",
      "needs pp - 1 = " + std::to_string(pp - 1) + " cut point(s), got " + std::to_string(c.parallel.pp_cuts.size()));
  resolve_pp_cuts(c, &require.src);
}

// Context parallelism: what each mode needs of the model.
void validate_context_parallel(const Config& c, const Require& require) {
  const auto& p = c.parallel;
  require(p.cp_mode == "all_to_all" || p.cp_mode == "ring", "parallel.cp_mode",
          "'" + p.cp_mode + "' is not one of all_to_all, ring");
  if (p.cp <= 1) return;
  // Sequences are padded to a multiple of 2 * cp (each rank holds two chunks).
  require(c.model.max_positions % (2 * p.cp) == 0, "parallel.cp",
          "each sequence is padded to a multiple of 2 * cp = " + std::to_string(2 * p.cp) +
              ", so model.max_positions (" + std::to_string(c.model.max_positions) + ") must be one");
  if (p.cp_mode == "all_to_all") {
    require(c.model.n_heads % (p.tp * p.cp) == 0, "parallel.cp",
            "all_to_all gives each of the tp * cp = " + std::to_string(p.tp * p.cp) +
                " ranks whole heads, but model.n_heads = " + std::to_string(c.model.n_heads) +
                " does not divide evenly (cp_mode: ring works with any head count)");
  } else {
    require(c.model.attention_dropout == 0, "parallel.cp_mode",
            "ring attention has no attention dropout, but model.attention_dropout is " +
                std::to_string(c.model.attention_dropout) + " (use cp_mode: all_to_all, or dropout 0)");
  }
}

// train: steps, device, evaluation.
void validate_train(const Config& c, const Require& require) {
  const auto& t = c.train;
  require(t.max_steps >= 1, "train.max_steps", "must be at least 1");
  require(t.device == "cpu" || t.device == "cuda" || t.device == "auto", "train.device",
          "'" + t.device + "' is not one of: cpu, cuda, auto");
  require(t.label_smoothing >= 0 && t.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)");
  require(t.eval_every >= 0, "train.eval_every", "must be >= 0");
  require(t.eval_batches >= 1, "train.eval_batches", "must be at least 1");
  require(t.dump_grads_step >= 0, "train.dump_grads_step", "must be >= 0 (0: never)");
  require(t.threads >= 0, "train.threads", "must be >= 0");
}

// optim: AdamW and the learning-rate schedule.
void validate_optim(const Config& c, const Require& require) {
  const auto& o = c.optim;
  require(o.lr > 0, "optim.lr", "must be positive");
  require(o.min_lr >= 0 && o.min_lr <= o.lr, "optim.min_lr", "must be in [0, optim.lr]");
  require(o.beta1 >= 0 && o.beta1 < 1, "optim.beta1", "must be in [0, 1)");
  require(o.beta2 >= 0 && o.beta2 < 1, "optim.beta2", "must be in [0, 1)");
  require(o.eps > 0, "optim.eps", "must be positive");
  require(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0");
  require(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0");
  require(o.decay_steps >= 0, "optim.decay_steps", "must be >= 0");
  require(o.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 disables clipping)");
}

// precision: the fp16 loss scaler.
void validate_precision(const Config& c, const Require& require) {
  const auto& ls = c.precision.loss_scale;
  require(ls.initial >= 1, "precision.loss_scale.initial", "must be >= 1");
  require(ls.growth_interval >= 1, "precision.loss_scale.growth_interval", "must be at least 1");
  require(ls.hysteresis >= 1, "precision.loss_scale.hysteresis", "must be at least 1");
  require(ls.min > 0 && ls.min <= ls.initial, "precision.loss_scale.min", "must be in (0, initial]");
}

// data: the training data (one dataset or a mixture), the valid split, lengths.
void validate_data(const Config& c, const Require& require) {
  const auto& d = c.data;
  if (d.mixture.empty()) {
    // `mixture: []` is what config_to_yaml writes beside a data.train.
    require(!d.train.empty() || !require.src.locations.count("data.mixture"), "data.mixture",
            "is empty (list datasets as {path: DIR, weight: W}, or give data.train)");
    require(!d.train.empty(), "data.train",
            "is required (a directory written by `moetrain tokenize`), or data.mixture (datasets with weights)");
    require(path_exists(d.train), "data.train", "no such file or directory: " + d.train);
  } else {
    require(d.train.empty(), "data.mixture",
            "give either data.train or data.mixture, not both (data.train is " + d.train + ")");
    // An item's error is located at its field when given, else at the item.
    auto require_item = [&](bool ok, const std::string& item, const std::string& field, const std::string& what) {
      const std::string key = item + "." + field;
      if (!ok) throw ConfigError(key + ": " + what + require.src.where(require.src.locations.count(key) ? key : item));
    };
    std::map<std::string, std::string> names;  // name -> the item that has it
    for (size_t i = 0; i < d.mixture.size(); ++i) {
      const auto& e = d.mixture[i];
      const std::string item = "data.mixture[" + std::to_string(i) + "]";
      require_item(!e.path.empty(), item, "path", "is required (a directory written by `moetrain tokenize`)");
      require_item(path_exists(e.path), item, "path", "no such file or directory: " + e.path);
      std::ostringstream weight;
      weight << e.weight;
      require_item(e.weight > 0 && std::isfinite(e.weight), item, "weight",
                   "must be a positive number, got " + weight.str());
      const std::string name = data::mixture_entry_name(e);
      const auto [it, fresh] = names.emplace(name, item);
      require_item(fresh, item, "name",
                   "'" + name + "' is also the name of " + it->second + " (give each dataset its own name)");
    }
  }
  require(d.valid.empty() || path_exists(d.valid), "data.valid", "no such file or directory: " + d.valid);
  require(d.tokenizer.empty() || std::filesystem::is_regular_file(d.tokenizer), "data.tokenizer",
          "no such file: " + d.tokenizer);
  require(d.src_len >= 4, "data.src_len", "must be at least 4");
  require(d.tgt_len >= 2, "data.tgt_len", "must be at least 2");
  require(d.prefetch >= 0, "data.prefetch", "must be 0 or more");
  require(d.noise_density > 0 && d.noise_density < 1, "data.noise_density", "must be in (0, 1)");
  require(d.mean_noise_span >= 1, "data.mean_noise_span", "must be at least 1");
  require(c.train.eval_every == 0 || !d.valid.empty(), "train.eval_every",
          "evaluation needs data.valid (a split written by `moetrain tokenize --valid-fraction`)");
}

// checkpoint, log, finetune and lora.
void validate_finetune(const Config& c, const Require& require) {
  require(c.checkpoint.every >= 0, "checkpoint.every", "must be >= 0");
  require(c.checkpoint.keep >= 0, "checkpoint.keep", "must be >= 0 (0 keeps all)");
  require(c.log.every >= 1, "log.every", "must be at least 1");
  require(c.log.prometheus_port >= 0 && c.log.prometheus_port <= 65535, "log.prometheus_port",
          "must be a TCP port, 1 to 65535 (0: no endpoint)");
  require(!c.log.prometheus_bind.empty(), "log.prometheus_bind", "must name an address (127.0.0.1, 0.0.0.0, ...)");
  require(c.log.stall_factor == 0 || c.log.stall_factor >= 1, "log.stall_factor",
          "must be at least 1 (x the median step time), or 0 for no stall watchdog");
  require(c.log.stall_min_s >= 0, "log.stall_min_s", "must be >= 0 seconds");
  require(c.log.peak_tflops >= 0 && std::isfinite(c.log.peak_tflops), "log.peak_tflops",
          "must be >= 0 TFLOP/s (0: unknown, no MFU)");
  require(c.lora.r >= 1, "lora.r", "must be at least 1");
  require(c.finetune.mode != FinetuneMode::Lora || !c.lora.targets.empty(), "lora.targets",
          "must name at least one layer kind");
  try {
    models::check_lora_targets(c.lora.targets);
  } catch (const std::invalid_argument& e) {
    require(false, "lora.targets", e.what());
  }
  require(c.finetune.mode != FinetuneMode::Lora || c.finetune.freeze.empty(), "finetune.freeze",
          "applies to full fine-tuning only (with LoRA every base weight is frozen)");

  require(c.lora.alpha > 0, "lora.alpha", "must be positive");
  require(c.lora.dropout >= 0 && c.lora.dropout < 1, "lora.dropout", "must be in [0, 1)");
}

// distill: the teacher is one whole model on every rank, and the KL needs
// each target token's whole-vocabulary logits on one rank.
void validate_distill(const Config& c, const Require& require) {
  const auto& d = c.distill;
  if (d.teacher.empty()) return;
  require(d.temperature > 0 && std::isfinite(d.temperature), "distill.temperature", "must be positive");
  require(d.alpha >= 0 && d.alpha <= 1, "distill.alpha", "must be in [0, 1] (the weight of the KL term)");
  require(d.top_k >= 0, "distill.top_k", "must be >= 0 (0: the whole vocabulary)");
  for (const auto& [key, size] : {std::pair<const char*, int64_t>{"parallel.tp", c.parallel.tp},
                                  {"parallel.pp", c.parallel.pp},
                                  {"parallel.cp", c.parallel.cp}}) {
    require(size == 1, key,
            "must be 1 with distill.teacher (the teacher is replicated on every rank, and the KL needs each "
            "token's whole-vocabulary logits; use data parallelism and ZeRO)");
  }
}

}  // namespace

std::vector<int64_t> resolve_pp_cuts(const Config& c, const ConfigSource* src) {
  const auto& cuts = c.parallel.pp_cuts;
  if (cuts.empty()) return {};
  const auto& m = c.model;
  const int64_t units = m.num_pipeline_units();
  const std::string where = src ? src->where("parallel.pp_cuts") : "";
  std::vector<int64_t> indices;
  for (const auto& cut : cuts) {
    int64_t unit = -1;
    const bool number = !cut.empty() && cut.size() < 10 && std::all_of(cut.begin(), cut.end(), ::isdigit);
    if (number) unit = std::stoll(cut);
    for (int64_t u = 0; u < units && !number; ++u) {
      if (m.pipeline_unit_name(u) == cut) unit = u;
    }
    if (unit < 0 || unit >= units) {
      throw ConfigError("parallel.pp_cuts: '" + cut + "' is not a pipeline unit of this model (embed, " +
                        "encoder.layers.0 .. " + std::to_string(m.encoder_layers - 1) +
                        ", encoder.final_norm, decoder.layers.0 .. " + std::to_string(m.decoder_layers - 1) +
                        ", decoder.final_norm, lm_head, or an index 0.." + std::to_string(units - 1) + ")" + where);
    }
    indices.push_back(unit);
  }
  try {
    return parallel::partition_from_cuts(indices, units, c.parallel.pp);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(std::string("parallel.pp_cuts: ") + e.what() + where);
  }
}

void validate_config(const Config& c, int64_t world_size, const ConfigSource& src) {
  const Require require{src};
  std::set<std::string> phase_names;
  for (size_t i = 0; i < c.phases.size(); ++i) {
    const std::string key = "phases[" + std::to_string(i) + "]";
    require(c.phases[i].steps >= 1, key + ".steps", "must be at least 1");
    // A phase's name names its TensorBoard folder and its metrics lines.
    const std::string& name = c.phases[i].name;
    const bool plain = std::all_of(name.begin(), name.end(), [](char ch) {
      return std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' || ch == '-';
    });
    require(plain && !name.empty() && name != "." && name != "..", key + ".name",
            "'" + name + "' must be letters, digits, '.', '_' or '-' (it names a folder)");
    require(phase_names.insert(name).second, key + ".name", "'" + name + "' names an earlier phase too");
  }
  validate_model(c, require);
  validate_distill(c, require);  // before the layout: its sizes must be 1
  validate_layout(c, require, world_size);
  validate_context_parallel(c, require);
  validate_train(c, require);
  validate_optim(c, require);
  validate_precision(c, require);
  validate_data(c, require);
  validate_finetune(c, require);
  // Phases: each one's config must hold on its own; errors name the phase
  // and the key's line in it.
  for (size_t i = 0; i < c.phases.size(); ++i) {
    const std::string prefix = "phases[" + std::to_string(i) + "].";
    ConfigSource phase_source = src;
    for (const auto& [key, where] : src.locations) {
      if (key.rfind(prefix, 0) == 0) phase_source.locations[key.substr(prefix.size())] = where;
    }
    if (phase_start(c, i) >= c.train.max_steps) break;  // after the run's last step
    try {
      validate_config(phase_config(c, i), world_size, phase_source);
    } catch (const ConfigError& e) {
      throw ConfigError("phases[" + std::to_string(i) + "] (" + c.phases[i].name + "): " + e.what());
    }
  }
}

}  // namespace moetrain::config
