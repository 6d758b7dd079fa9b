// Distillation: the teacher of a `distill:` run (config::DistillConfig) and
// the KL term it adds to the student's loss. The teacher is a checkpoint of
// any moetrain architecture (MoE included) saved under any layout, loaded as
// one whole model on every rank (replicated: its weights in the compute
// dtype on each rank, e.g. 2 bytes per parameter in bf16) with dropless MoE
// layers, so its logits for a sequence do not depend on the rest of its
// batch. It runs forward without gradients on the student's micro-batches.
// Teacher and student must share the tokenizer.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "config/config.h"
#include "data/batch.h"
#include "models/seq2seq_transformer.h"

namespace moetrain::train {

class Distillation {
 public:
  // Loads `config.teacher` onto `device` in `dtype`. `student_tokenizer` is
  // the student's SentencePiece model and `student_vocab` its logits' width.
  // Throws config::ConfigError when the tokenizers differ, and the
  // checkpoint's errors when the teacher cannot be read.
  Distillation(const config::DistillConfig& config, const std::string& student_tokenizer, int64_t student_vocab,
               torch::Device device, torch::ScalarType dtype);

  // KL(teacher_T || student_T) summed over the micro-batch's target tokens:
  // an fp32 scalar, differentiable with respect to `student_logits` [B, T, V]
  // (kernels/distill_loss.h).
  torch::Tensor kl_sum(const torch::Tensor& student_logits, const data::Seq2SeqBatch& mb);

  // The weights of the loss per target token: kl_weight x KL + ce_weight x CE
  // (alpha x T^2 and 1 - alpha).
  double kl_weight() const { return config_.alpha * config_.temperature * config_.temperature; }
  double ce_weight() const { return 1.0 - config_.alpha; }

  // "teacher DIR (step S, N parameters, X MiB per rank in DTYPE)".
  std::string describe() const;

 private:
  config::DistillConfig config_;
  std::string checkpoint_;
  int64_t step_ = 0;
  models::Seq2SeqTransformer teacher_{nullptr};
};

}  // namespace moetrain::train
