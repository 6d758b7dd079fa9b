// Seq2SeqBatch: one micro-batch as the model consumes it. Every objective
// (span corruption, seq2seq pairs) produces this same shape.
#pragma once

#include <torch/torch.h>

namespace moetrain::data {

struct Seq2SeqBatch {
  torch::Tensor src_tokens;       // [B, S] int64, padded with pad_id
  torch::Tensor src_mask;         // [B, S] bool, true where a real token is
  torch::Tensor tgt_in;           // [B, T] int64: BOS + target[:-1] (teacher forcing)
  torch::Tensor tgt_out;          // [B, T] int64: target, pad_id where padded
  torch::Tensor tgt_mask;         // [B, T] bool, true where tgt_out is a real token
  int64_t num_target_tokens = 0;  // tgt_mask.sum()
  int64_t num_source_tokens = 0;  // src_mask.sum()

  // The same batch with its tensors on `device` (the counts stay).
  Seq2SeqBatch to(torch::Device device, bool non_blocking = false) const {
    Seq2SeqBatch b = *this;
    for (torch::Tensor* t : {&b.src_tokens, &b.src_mask, &b.tgt_in, &b.tgt_out, &b.tgt_mask}) {
      *t = t->to(device, non_blocking);
    }
    return b;
  }
};

}  // namespace moetrain::data
