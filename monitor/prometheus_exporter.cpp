#include "monitor/prometheus_exporter.h"

#include <httplib.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace moetrain::monitor {
namespace {

struct Family {
  const char* name;
  const char* type;
  const char* help;
};

// Every family the endpoint serves, in the order it serves them.
const Family kFamilies[] = {
    {"moetrain_step", "gauge", "Optimizer steps done."},
    {"moetrain_max_steps", "gauge", "Optimizer steps the run is configured for."},
    {"moetrain_last_step_timestamp_seconds", "gauge", "Unix time at which the last step finished."},
    {"moetrain_step_seconds", "gauge", "Wall-clock seconds of the last step."},
    {"moetrain_data_wait_seconds", "gauge", "Of the last step, seconds spent waiting for its batches."},
    {"moetrain_loss", "gauge", "Cross-entropy per target token of the last step's global batch."},
    {"moetrain_aux_loss", "gauge", "MoE load-balancing loss of the last step (unweighted, summed over layers)."},
    {"moetrain_z_loss", "gauge", "Router z-loss of the last step (unweighted, summed over layers)."},
    {"moetrain_learning_rate", "gauge", "Learning rate of the last step."},
    {"moetrain_grad_norm", "gauge", "Gradient norm of the last step, before clipping."},
    {"moetrain_loss_scale", "gauge", "fp16 loss scale (1 in fp32 and bf16)."},
    {"moetrain_tokens_per_second", "gauge", "Source and target tokens per second of the last step."},
    {"moetrain_distill_kl", "gauge", "Distillation KL per target token of the last step (distill.teacher)."},
    {"moetrain_distill_loss", "gauge", "Distillation loss trained on per target token of the last step."},
    {"moetrain_model_flops_utilization_ratio", "gauge",
     "Model FLOPs per second of the last step over every rank's peak (log.peak_tflops)."},
    {"moetrain_tokens_total", "counter", "Source and target tokens trained on by this process."},
    {"moetrain_skipped_steps_total", "counter", "Steps skipped for an fp16 overflow by this process."},
    {"moetrain_dropped_tokens_total", "counter", "MoE token assignments over an expert's capacity."},
    {"moetrain_resident_memory_bytes", "gauge", "Resident set of this rank's process."},
    {"moetrain_peak_resident_memory_bytes", "gauge", "Peak resident set of this rank's process."},
    {"moetrain_cuda_peak_allocated_bytes", "gauge", "Peak bytes of live CUDA tensors (0 on the CPU)."},
    {"moetrain_communication_bytes_total", "counter", "Bytes this rank's collectives moved, by group and op."},
    {"moetrain_communication_seconds_total", "counter", "Seconds this rank spent in collectives, by group and op."},
    {"moetrain_expert_tokens_total", "counter", "Token assignments an expert kept, by MoE layer and expert."},
    {"moetrain_expert_load_ratio", "gauge",
     "Tokens an expert kept in the last step over the layer's mean per expert (1: balanced)."},
    {"moetrain_eval_loss", "gauge", "Cross-entropy per target token of the last evaluation."},
    {"moetrain_eval_perplexity", "gauge", "Perplexity of the last evaluation."},
    {"moetrain_eval_step", "gauge", "Step of the last evaluation."},
    {"moetrain_checkpoint_seconds", "gauge", "Seconds the last checkpoint save took."},
    {"moetrain_checkpoint_bytes", "gauge", "Bytes of the last checkpoint."},
    {"moetrain_last_checkpoint_timestamp_seconds", "gauge", "Unix time at which the last checkpoint was saved."},
    {"moetrain_checkpoints_total", "counter", "Checkpoints saved by this process."},
};

double unix_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

}  // namespace

std::string prometheus_label_value(const std::string& value) {
  std::string out = "\"";
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out + "\"";
}

PrometheusExporter::PrometheusExporter(const std::string& bind, int port, const PrometheusLabels& labels)
    : labels_(labels), server_(std::make_unique<httplib::Server>()) {
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a
  // second run on the same port would bind too and share the scrapes.
  server_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(exposition(), "text/plain; version=0.0.4; charset=utf-8");
  });
  const std::string address = bind + ":" + std::to_string(port);
  if (port == 0) {
    port_ = server_->bind_to_any_port(bind);
    if (port_ <= 0) throw std::runtime_error("Prometheus endpoint: cannot listen on " + bind + " (any port)");
  } else {
    if (!server_->bind_to_port(bind, port)) {
      throw std::runtime_error("Prometheus endpoint: cannot listen on " + address +
                               " (is the port in use, or the address not this machine's?)");
    }
    port_ = port;
  }
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    listen_returned_ = true;
  });
  // stop() only ends a server that is already listening: wait for it, so the
  // destructor never joins a thread that starts listening after stop().
  while (!server_->is_running() && !listen_returned_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (!server_->is_running()) {
    thread_.join();
    throw std::runtime_error("Prometheus endpoint: cannot listen on " + address);
  }
}

PrometheusExporter::~PrometheusExporter() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

void PrometheusExporter::set_phase(const std::string& phase) {
  std::lock_guard<std::mutex> lock(mutex_);
  labels_.phase = phase;
}

void PrometheusExporter::set(const std::string& name, double value, const std::string& labels) {
  samples_[name][labels] = value;
}

void PrometheusExporter::add(const std::string& name, double value, const std::string& labels) {
  samples_[name][labels] += value;
}

void PrometheusExporter::record_step(const StepMetrics& m) {
  std::lock_guard<std::mutex> lock(mutex_);
  set("moetrain_step", static_cast<double>(m.step));
  set("moetrain_max_steps", static_cast<double>(m.max_steps));
  set("moetrain_last_step_timestamp_seconds", unix_time());
  set("moetrain_step_seconds", m.step_ms / 1000.0);
  set("moetrain_data_wait_seconds", m.data_wait_ms / 1000.0);
  set("moetrain_loss", m.loss);
  set("moetrain_aux_loss", m.aux_loss);
  set("moetrain_z_loss", m.z_loss);
  set("moetrain_learning_rate", m.lr);
  set("moetrain_grad_norm", m.grad_norm);
  set("moetrain_loss_scale", m.loss_scale);
  set("moetrain_tokens_per_second", m.tokens_per_s);
  if (m.mfu) set("moetrain_model_flops_utilization_ratio", *m.mfu);
  if (m.distill_kl) set("moetrain_distill_kl", *m.distill_kl);
  if (m.distill_loss) set("moetrain_distill_loss", *m.distill_loss);
  add("moetrain_tokens_total", static_cast<double>(m.tokens));
  add("moetrain_skipped_steps_total", m.skipped ? 1.0 : 0.0);
  add("moetrain_dropped_tokens_total", static_cast<double>(m.dropped_tokens));
  set("moetrain_resident_memory_bytes", static_cast<double>(m.rss_bytes));
  set("moetrain_peak_resident_memory_bytes", static_cast<double>(m.peak_rss_bytes));
  set("moetrain_cuda_peak_allocated_bytes", static_cast<double>(m.cuda_peak_bytes));
  for (const auto& [key, figures] : m.comm) {
    const auto space = key.find(' ');
    const std::string labels = "group=" + prometheus_label_value(key.substr(0, space)) +
                               ",op=" + prometheus_label_value(key.substr(space + 1));
    add("moetrain_communication_bytes_total", static_cast<double>(figures.bytes), labels);
    add("moetrain_communication_seconds_total", figures.seconds, labels);
  }
  const size_t layers = m.moe_layers.size();
  const size_t experts = layers == 0 ? 0 : m.expert_tokens.size() / layers;
  for (size_t l = 0; l < layers; ++l) {
    int64_t total = 0;
    for (size_t e = 0; e < experts; ++e) total += m.expert_tokens[l * experts + e];
    for (size_t e = 0; e < experts; ++e) {
      const std::string labels =
          "layer=" + prometheus_label_value(m.moe_layers[l]) + ",expert=" + prometheus_label_value(std::to_string(e));
      const auto tokens = static_cast<double>(m.expert_tokens[l * experts + e]);
      add("moetrain_expert_tokens_total", tokens, labels);
      if (total > 0)
        set("moetrain_expert_load_ratio", tokens * static_cast<double>(experts) / static_cast<double>(total), labels);
    }
  }
}

void PrometheusExporter::record_eval(int64_t step, double loss) {
  std::lock_guard<std::mutex> lock(mutex_);
  set("moetrain_eval_loss", loss);
  set("moetrain_eval_perplexity", std::exp(loss));
  set("moetrain_eval_step", static_cast<double>(step));
}

void PrometheusExporter::record_checkpoint(int64_t /*step*/, double seconds, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  set("moetrain_checkpoint_seconds", seconds);
  set("moetrain_checkpoint_bytes", static_cast<double>(bytes));
  set("moetrain_last_checkpoint_timestamp_seconds", unix_time());
  add("moetrain_checkpoints_total", 1.0);
}

std::string PrometheusExporter::exposition() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string common = "run=" + prometheus_label_value(labels_.run);
  if (!labels_.phase.empty()) common += ",phase=" + prometheus_label_value(labels_.phase);
  common += ",rank=" + prometheus_label_value(std::to_string(labels_.rank));
  std::string out;
  for (const Family& f : kFamilies) {
    const auto it = samples_.find(f.name);
    if (it == samples_.end()) continue;
    out += std::string("# HELP ") + f.name + " " + f.help + "\n";
    out += std::string("# TYPE ") + f.name + " " + f.type + "\n";
    for (const auto& [labels, value] : it->second) {
      out +=
          std::string(f.name) + "{" + common + (labels.empty() ? "" : "," + labels) + "} " + format_value(value) + "\n";
    }
  }
  return out;
}

}  // namespace moetrain::monitor
