#include "train/distillation.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>

#include "checkpoint/checkpoint_model.h"
#include "checkpoint/directory.h"
#include "data/batch_source.h"
#include "kernels/distill_loss.h"

namespace moetrain::train {

namespace {

const char* dtype_name(torch::ScalarType t) {
  return t == torch::kBFloat16 ? "bf16" : t == torch::kHalf ? "fp16" : "fp32";
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

Distillation::Distillation(const config::DistillConfig& config, const std::string& student_tokenizer,
                           int64_t student_vocab, torch::Device device, torch::ScalarType dtype)
    : config_(config) {
  if (!std::filesystem::exists(config.teacher)) {
    throw config::ConfigError("distill.teacher: no such checkpoint or run directory: " + config.teacher);
  }
  // The student's tokenizer stands in for the teacher's while loading; the
  // two are compared below.
  checkpoint::CheckpointModel m;
  try {
    m = checkpoint::load_checkpoint_model(config.teacher, student_tokenizer, /*dropless_moe=*/true);
  } catch (const checkpoint::CheckpointError& e) {
    throw checkpoint::CheckpointError("distill.teacher: " + std::string(e.what()));
  }
  checkpoint_ = m.checkpoint;
  step_ = m.step;
  const std::string where = "distill.teacher: " + m.checkpoint + ": ";
  if (m.config.model.vocab_size != student_vocab) {
    throw config::ConfigError(where + "the teacher's vocabulary has " + std::to_string(m.config.model.vocab_size) +
                              " entries, the student's " + std::to_string(student_vocab) +
                              ": teacher and student must share the tokenizer");
  }
  std::string teacher_tokenizer;
  try {
    teacher_tokenizer = data::resolve_tokenizer_path(m.config.data);
  } catch (const std::runtime_error&) {
    // The teacher's data has moved: the vocabulary sizes are all we can compare.
  }
  if (!teacher_tokenizer.empty() && read_bytes(teacher_tokenizer) != read_bytes(student_tokenizer)) {
    throw config::ConfigError(where + "the teacher was trained with " + teacher_tokenizer + ", the student uses " +
                              student_tokenizer + ", and they differ: teacher and student must share the tokenizer");
  }
  teacher_ = std::move(m.model);
  teacher_->place(device, dtype);
  teacher_->eval();
}

torch::Tensor Distillation::kl_sum(const torch::Tensor& student_logits, const data::Seq2SeqBatch& mb) {
  torch::Tensor teacher_logits;
  {
    torch::NoGradGuard no_grad;
    teacher_logits = teacher_->forward(mb.src_tokens, mb.src_mask, mb.tgt_in, mb.tgt_mask).logits;
  }
  const int64_t vocab = student_logits.size(-1);
  return kernels::distill_kl(student_logits.reshape({-1, vocab}), teacher_logits.reshape({-1, vocab}),
                             mb.tgt_mask.reshape({-1}), config_.temperature, config_.top_k)
      .kl_sum;
}

std::string Distillation::describe() const {
  int64_t numel = 0, bytes = 0;
  for (const auto& p : teacher_->parameters()) {
    numel += p.numel();
    bytes += p.numel() * p.element_size();
  }
  char text[160];
  std::snprintf(text, sizeof(text), " (step %lld, %lld parameters, %.1f MiB per rank in %s)",
                static_cast<long long>(step_), static_cast<long long>(numel), static_cast<double>(bytes) / (1 << 20),
                dtype_name(teacher_->parameters().front().scalar_type()));
  return "teacher " + checkpoint_ + text;
}

}  // namespace moetrain::train
