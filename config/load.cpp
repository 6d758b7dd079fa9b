#include "config/load.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>

#include "config/yaml_checks.h"

namespace moetrain::config {
namespace {

template <class E>
using Choices = std::vector<std::pair<const char*, E>>;

const Choices<ComputeDtype>& kDtypes = compute_dtype_names();
const Choices<models::NormType> kNorms = {{"layernorm", models::NormType::LayerNorm},
                                          {"rmsnorm", models::NormType::RMSNorm}};
const Choices<models::PositionType> kPositions = {{"sinusoidal", models::PositionType::Sinusoidal},
                                                  {"learned", models::PositionType::Learned},
                                                  {"rotary", models::PositionType::Rotary},
                                                  {"sinusoidal_fairseq", models::PositionType::SinusoidalFairseq}};
const Choices<models::AttentionType> kAttention = {{"global", models::AttentionType::Global},
                                                   {"local", models::AttentionType::Local},
                                                   {"dynamic", models::AttentionType::Dynamic}};
const Choices<models::Activation> kActivations = {
    {"relu", models::Activation::ReLU}, {"gelu", models::Activation::GELU}, {"silu", models::Activation::SiLU}};
const Choices<optim::ScheduleType> kSchedules = {{"cosine", optim::ScheduleType::Cosine},
                                                 {"linear", optim::ScheduleType::Linear},
                                                 {"constant", optim::ScheduleType::Constant}};
const Choices<data::Objective> kObjectives = {{"span_corruption", data::Objective::SpanCorruption},
                                              {"seq2seq", data::Objective::Seq2Seq}};
const Choices<FinetuneMode> kFinetuneModes = {{"full", FinetuneMode::Full}, {"lora", FinetuneMode::Lora}};

// The sections a phase may set (see PhaseConfig), each visited alike at the
// top level and in a phase.
template <class V>
void visit_optim(V& s, optim::OptimConfig& o) {
  s.field("lr", o.lr);
  s.field("min_lr", o.min_lr);
  s.field("beta1", o.beta1);
  s.field("beta2", o.beta2);
  s.field("eps", o.eps);
  s.field("weight_decay", o.weight_decay);
  s.field("decay_norms_and_biases", o.decay_norms_and_biases);
  s.field("decay_embeddings", o.decay_embeddings);
  s.field("warmup_steps", o.warmup_steps);
  s.choice("schedule", o.schedule, kSchedules);
  s.field("decay_steps", o.decay_steps);
  s.field("grad_clip", o.grad_clip);
  s.done();
}

template <class V>
void visit_data(V& s, data::DataConfig& d) {
  s.field("train", d.train);
  s.records("mixture", d.mixture, [](V& e, data::MixtureEntry& m) {
    e.field("path", m.path);
    e.field("weight", m.weight);
    e.field("name", m.name);
    e.done();
  });
  s.field("valid", d.valid);
  s.field("tokenizer", d.tokenizer);
  s.choice("objective", d.objective, kObjectives);
  s.field("src_len", d.src_len);
  s.field("tgt_len", d.tgt_len);
  s.field("noise_density", d.noise_density);
  s.field("mean_noise_span", d.mean_noise_span);
  s.field("shuffle", d.shuffle);
  s.field("streaming", d.streaming);
  s.field("prefetch", d.prefetch);
  s.done();
}

template <class V>
void visit_finetune(V& s, FinetuneConfig& f) {
  s.choice("mode", f.mode, kFinetuneModes);
  s.field("freeze", f.freeze);
  s.done();
}

template <class V>
void visit_lora(V& s, LoraConfig& l) {
  s.field("r", l.r);
  s.field("alpha", l.alpha);
  s.field("dropout", l.dropout);
  s.field("targets", l.targets);
  s.field("rslora", l.rslora);
  s.done();
}

// Every key of the config, listed once. A Visitor either reads a YAML tree
// into the struct (ConfigReader) or writes the struct out (ConfigWriter).
template <class V>
void visit_config(V& root, Config& c) {
  {
    V s = root.section("model");
    auto& m = c.model;
    s.field("vocab_size", m.vocab_size);
    s.field("d_model", m.d_model);
    s.field("n_heads", m.n_heads);
    s.field("d_ff", m.d_ff);
    s.field("encoder_layers", m.encoder_layers);
    s.field("decoder_layers", m.decoder_layers);
    s.field("max_positions", m.max_positions);
    s.field("pad_id", m.pad_id);
    s.choice("norm", m.norm, kNorms);
    s.field("norm_eps", m.norm_eps);
    s.choice("position", m.position, kPositions);
    s.field("rope_theta", m.rope_theta);
    s.choice("attention", m.attention, kAttention);
    s.field("local_window", m.local_window);
    s.choice("activation", m.activation, kActivations);
    s.field("bias", m.bias);
    s.field("tie_embeddings", m.tie_embeddings);
    s.field("scale_embeddings", m.scale_embeddings);
    s.field("dropout", m.dropout);
    s.field("attention_dropout", m.attention_dropout);
    s.field("init_std", m.init_std);
    s.field("activation_checkpointing", m.activation_checkpointing);
    {
      V e = s.section("moe");
      e.field("num_experts", m.moe.num_experts);
      e.field("top_k", m.moe.top_k);
      e.field("capacity_factor", m.moe.capacity_factor);
      e.field("every", m.moe.every);
      e.field("d_ff_expert", m.moe.d_ff_expert);
      e.field("aux_loss_coef", m.moe.aux_loss_coef);
      e.field("z_loss_coef", m.moe.z_loss_coef);
      e.field("normalize_top_k", m.moe.normalize_top_k);
      e.field("token_dropout", m.moe.token_dropout);
      e.done();
    }
    s.done();
  }
  {
    V s = root.section("parallel");
    auto& p = c.parallel;
    s.field("dp", p.dp);
    s.field("tp", p.tp);
    s.field("pp", p.pp);
    s.field("ep", p.ep);
    s.field("cp", p.cp);
    s.field("cp_mode", p.cp_mode);
    s.field("zero_stage", p.zero_stage);
    s.field("microbatches", p.microbatches);
    s.field("schedule", p.schedule);
    s.field("pp_cuts", p.pp_cuts);
    s.field("bucket_mb", p.bucket_mb);
    s.field("overlap_grad_reduce", p.overlap_grad_reduce);
    s.field("timeout_s", p.timeout_s);
    s.field("backend", p.backend);
    s.done();
  }
  {
    V s = root.section("precision");
    s.choice("compute", c.precision.compute, kDtypes);
    {
      V l = s.section("loss_scale");
      auto& ls = c.precision.loss_scale;
      l.field("initial", ls.initial);
      l.field("growth_interval", ls.growth_interval);
      l.field("hysteresis", ls.hysteresis);
      l.field("min", ls.min);
      l.done();
    }
    s.done();
  }
  {
    V s = root.section("optim");
    visit_optim(s, c.optim);
  }
  {
    V s = root.section("train");
    auto& t = c.train;
    s.field("global_batch", t.global_batch);
    s.field("micro_batch", t.micro_batch);
    s.field("max_steps", t.max_steps);
    s.field("seed", t.seed);
    s.field("device", t.device);
    s.field("label_smoothing", t.label_smoothing);
    s.field("eval_every", t.eval_every);
    s.field("eval_batches", t.eval_batches);
    s.field("dump_grads_step", t.dump_grads_step);
    s.field("threads", t.threads);
    s.done();
  }
  {
    V s = root.section("data");
    visit_data(s, c.data);
  }
  {
    V s = root.section("checkpoint");
    s.field("every", c.checkpoint.every);
    s.field("keep", c.checkpoint.keep);
    s.done();
  }
  {
    V s = root.section("log");
    s.field("every", c.log.every);
    s.field("tensorboard", c.log.tensorboard);
    s.field("prometheus_port", c.log.prometheus_port);
    s.field("prometheus_bind", c.log.prometheus_bind);
    s.field("prometheus_all_ranks", c.log.prometheus_all_ranks);
    s.field("stall_factor", c.log.stall_factor);
    s.field("stall_min_s", c.log.stall_min_s);
    s.field("peak_tflops", c.log.peak_tflops);
    s.done();
  }
  {
    V s = root.section("finetune");
    visit_finetune(s, c.finetune);
  }
  {
    V s = root.section("lora");
    visit_lora(s, c.lora);
  }
  {
    V s = root.section("distill");
    s.field("teacher", c.distill.teacher);
    s.field("temperature", c.distill.temperature);
    s.field("alpha", c.distill.alpha);
    s.field("top_k", c.distill.top_k);
    s.done();
  }
  // Phases start from the run's own sections (read above) and change what
  // they name.
  root.records(
      "phases", c.phases,
      [](V& e, PhaseConfig& p) {
        e.field("name", p.name);
        e.field("steps", p.steps);
        {
          V s = e.section("finetune");
          visit_finetune(s, p.finetune);
        }
        {
          V s = e.section("lora");
          visit_lora(s, p.lora);
        }
        {
          V s = e.section("optim");
          visit_optim(s, p.optim);
        }
        {
          V s = e.section("data");
          visit_data(s, p.data);
        }
        e.done();
      },
      PhaseConfig{"", 0, c.finetune, c.lora, c.optim, c.data});
  root.done();
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

struct ReadContext {
  std::string file;
  std::map<std::string, std::string> overrides;  // key path -> the --set text
  ConfigSource* source = nullptr;
};

class ConfigReader {
 public:
  ConfigReader(YAML::Node node, std::string path, ReadContext* ctx)
      : node_(std::move(node)), path_(std::move(path)), ctx_(ctx) {
    if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap()) {
      fail(path_.empty() ? std::string("the config") : path_, "expected a mapping of keys", node_);
    }
  }

  ConfigReader section(const std::string& key) {
    known_.insert(key);
    YAML::Node child = present() ? node_[key] : YAML::Node();
    return ConfigReader(child, join(key), ctx_);
  }

  void field(const std::string& key, int64_t& out) {
    read(key, [&](const YAML::Node& n) { out = convert<int64_t>(n, key, "an integer"); });
  }
  void field(const std::string& key, uint64_t& out) {
    read(key, [&](const YAML::Node& n) { out = convert<uint64_t>(n, key, "a non-negative integer"); });
  }
  void field(const std::string& key, double& out) {
    read(key, [&](const YAML::Node& n) { out = convert<double>(n, key, "a number"); });
  }
  void field(const std::string& key, bool& out) {
    read(key, [&](const YAML::Node& n) { out = convert<bool>(n, key, "true or false"); });
  }
  void field(const std::string& key, std::string& out) {
    read(key, [&](const YAML::Node& n) { out = convert<std::string>(n, key, "a string"); });
  }
  void field(const std::string& key, std::vector<std::string>& out) {
    read(key, [&](const YAML::Node& n) {
      if (!n.IsSequence()) fail(join(key), "expected a list of strings", n);
      out.clear();
      for (const auto& item : n) out.push_back(convert<std::string>(item, key, "a string"));
    });
  }
  // A list of mappings, item i read into one T by visit(reader, value) and
  // named key[i] in errors (e.g. data.mixture[1].weight).
  // Each item starts as a copy of `prototype`.
  template <class T, class F>
  void records(const std::string& key, std::vector<T>& out, F&& visit, const T& prototype = T{}) {
    read(key, [&](const YAML::Node& n) {
      if (!n.IsSequence()) fail(join(key), "expected a list of mappings", n);
      out.clear();
      for (size_t i = 0; i < n.size(); ++i) {
        const std::string item = join(key) + "[" + std::to_string(i) + "]";
        if (ctx_->source) ctx_->source->locations[item] = location(item, n[i]);
        ConfigReader reader(n[i], item, ctx_);
        T value = prototype;
        visit(reader, value);
        out.push_back(std::move(value));
      }
    });
  }
  template <class E>
  void choice(const std::string& key, E& out, const Choices<E>& choices) {
    read(key, [&](const YAML::Node& n) {
      const auto text = convert<std::string>(n, key, "a string");
      for (const auto& [name, value] : choices) {
        if (text == name) {
          out = value;
          return;
        }
      }
      std::string allowed;
      for (const auto& c : choices) allowed += std::string(allowed.empty() ? "" : ", ") + c.first;
      fail(join(key), "'" + text + "' is not one of: " + allowed, n);
    });
  }

  // Every key present but never asked for is an error.
  void done() {
    if (!present()) return;
    for (const auto& kv : node_) {
      const auto key = yaml_key_text(kv.first);
      if (known_.count(key)) continue;
      std::string best;
      size_t best_distance = 3;
      for (const auto& k : known_) {
        const size_t d = edit_distance(key, k);
        if (d < best_distance || (d == best_distance && best.empty() && d <= key.size() / 3)) {
          best_distance = d;
          best = k;
        }
      }
      std::string message = "unknown key '" + join(key) + "'";
      if (!best.empty()) message += " (did you mean '" + join(best) + "'?)";
      throw ConfigError(message + located(join(key), kv.first));
    }
  }

 private:
  bool present() const { return node_.IsDefined() && node_.IsMap(); }
  std::string join(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  template <class F>
  void read(const std::string& key, F&& apply) {
    known_.insert(key);
    if (!present()) return;
    const YAML::Node n = node_[key];
    if (!n.IsDefined()) return;
    if (ctx_->source) ctx_->source->locations[join(key)] = location(join(key), n);
    apply(n);
  }

  template <class T>
  T convert(const YAML::Node& n, const std::string& key, const char* expected) const {
    if (!n.IsScalar()) fail(join(key), std::string("expected ") + expected, n);
    try {
      return n.as<T>();
    } catch (const YAML::Exception&) {
      fail(join(key), std::string("expected ") + expected + ", got '" + n.Scalar() + "'", n);
    }
  }

  std::string location(const std::string& path, const YAML::Node& n) const {
    // A key set (or a section created) by --set is located by that flag.
    for (const auto& [key, text] : ctx_->overrides) {
      if (key == path || key.rfind(path + ".", 0) == 0 || path.rfind(key + "[", 0) == 0) return "--set " + text;
    }
    return ctx_->file + ":" + std::to_string(n.Mark().line + 1);
  }
  std::string located(const std::string& path, const YAML::Node& n) const { return " (" + location(path, n) + ")"; }
  [[noreturn]] void fail(const std::string& path, const std::string& what, const YAML::Node& n) const {
    throw ConfigError(path + ": " + what + located(path, n));
  }

  YAML::Node node_;
  std::string path_;
  ReadContext* ctx_;
  std::set<std::string> known_;
};

class ConfigWriter {
 public:
  explicit ConfigWriter(YAML::Node node) : node_(std::move(node)) {}
  ConfigWriter section(const std::string& key) {
    node_[key] = YAML::Node(YAML::NodeType::Map);
    return ConfigWriter(node_[key]);
  }
  template <class T>
  void field(const std::string& key, const T& value) {
    node_[key] = value;
  }
  template <class T, class F>
  void records(const std::string& key, std::vector<T>& values, F&& visit, const T& = T{}) {
    YAML::Node list(YAML::NodeType::Sequence);
    for (auto& value : values) {
      YAML::Node item(YAML::NodeType::Map);
      ConfigWriter writer(item);
      visit(writer, value);
      list.push_back(item);
    }
    node_[key] = list;
  }
  template <class E>
  void choice(const std::string& key, const E& value, const Choices<E>& choices) {
    for (const auto& [name, v] : choices) {
      if (v == value) node_[key] = std::string(name);
    }
  }
  void done() {}

 private:
  YAML::Node node_;
};

void apply_override(YAML::Node& root, const std::string& text, ReadContext& ctx) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError("--set " + text + ": expected key=value (for example optim.lr=1e-3)");
  }
  const std::string key = text.substr(0, eq);
  const std::string value_text = text.substr(eq + 1);
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::Exception& e) {
    throw ConfigError("--set " + text + ": value is not valid YAML: " + e.msg);
  }
  check_yaml_keys(value, "--set " + text, key);
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) {
    if (part.empty()) throw ConfigError("--set " + text + ": empty component in key '" + key + "'");
    parts.push_back(part);
  }
  YAML::Node cur = root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node child = cur[parts[i]];
    if (!child.IsDefined() || child.IsNull()) {
      cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
      child = cur[parts[i]];
    } else if (!child.IsMap()) {
      throw ConfigError("--set " + text + ": '" + parts[i] + "' is not a section");
    }
    cur.reset(child);
  }
  cur[parts.back()] = value;
  ctx.overrides[key] = text;
}

}  // namespace

std::string ConfigSource::where(const std::string& key) const {
  const auto it = locations.find(key);
  if (it != locations.end()) return " (" + it->second + ")";
  return file.empty() ? "" : " (" + file + ")";
}

namespace {

// The typed config of a parsed YAML document (`origin` names it in errors).
Config config_from_yaml(YAML::Node root, const std::string& origin, const std::vector<std::string>& overrides,
                        ReadContext& ctx) {
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw ConfigError(origin + ": the config must be a mapping of sections");
  for (const auto& text : overrides) apply_override(root, text, ctx);

  Config config;
  ConfigReader reader(root, "", &ctx);
  visit_config(reader, config);
  const YAML::Node& read_root = root;
  int64_t total_steps = 0;
  for (size_t i = 0; i < config.phases.size(); ++i) {
    auto& phase = config.phases[i];
    if (phase.name.empty()) phase.name = "phase" + std::to_string(i);
    total_steps += phase.steps;
    // A phase that names one kind of training data drops the other. An empty
    // phase (`- ~`) is no mapping, and indexing one throws YAML::InvalidNode.
    const YAML::Node item = read_root["phases"][i];
    const YAML::Node data = item.IsMap() ? item["data"] : YAML::Node();
    const bool names_mixture = data.IsMap() && data["mixture"] && data["mixture"].size() > 0;
    const bool names_train = data.IsMap() && data["train"] && !data["train"].IsNull() && !phase.data.train.empty();
    if (names_mixture) {
      phase.data.train.clear();
    } else if (names_train) {
      phase.data.mixture.clear();
    }
  }
  // With phases the run ends with the last one, or at train.max_steps when
  // that comes first.
  const YAML::Node train = read_root["train"];
  if (!config.phases.empty()) {
    const bool given = train.IsMap() && train["max_steps"];
    config.train.max_steps = given ? std::min(config.train.max_steps, total_steps) : total_steps;
  }
  return config;
}

}  // namespace

Config load_config_text(const std::string& yaml, const std::string& origin) {
  ReadContext ctx;
  ctx.file = origin;
  ConfigSource source;
  ctx.source = &source;
  source.file = origin;
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(origin + ":" + std::to_string(e.mark.line + 1) + ": invalid YAML: " + e.msg);
  }
  check_yaml_keys(root, origin, "");
  return config_from_yaml(root, origin, {}, ctx);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides, ConfigSource* source) {
  ReadContext ctx;
  ctx.file = path;
  ConfigSource local_source;
  ctx.source = source ? source : &local_source;
  ctx.source->file = path;

  YAML::Node root;
  if (!path.empty()) {
    if (!std::filesystem::is_regular_file(path)) {
      throw ConfigError("config file not found: " + path);
    }
    try {
      root = YAML::LoadFile(path);
    } catch (const YAML::ParserException& e) {
      throw ConfigError(path + ":" + std::to_string(e.mark.line + 1) + ": invalid YAML: " + e.msg);
    } catch (const YAML::Exception& e) {
      throw ConfigError(path + ": cannot read: " + e.msg);
    }
    check_yaml_keys(root, path, "");
  }
  return config_from_yaml(root, path, overrides, ctx);
}
std::string config_to_yaml(const Config& config) {
  YAML::Node root(YAML::NodeType::Map);
  ConfigWriter writer(root);
  Config copy = config;
  visit_config(writer, copy);
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

}  // namespace moetrain::config
