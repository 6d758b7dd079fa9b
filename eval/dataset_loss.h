// The loss of a model on a dataset: mean cross-entropy per target token and
// perplexity. One batch scorer (batch_cross_entropy) and one accounting
// (LossTotals) serve both `moetrain eval --checkpoint --data` (a whole model
// on one process: dataset_loss below) and the trainer's evaluation (the same
// scorer on the last pipeline stage, summed over the data-parallel and
// pipeline ranks: train::Trainer::evaluate).
#pragma once

#include <functional>

#include <torch/torch.h>

#include <cstdint>

#include "data/batch.h"
#include "data/batch_source.h"
#include "kernels/cross_entropy.h"
#include "models/seq2seq_transformer.h"
#include "parallel/communicator.h"
#include "parallel/tensor_parallel.h"

namespace moetrain::eval {

struct LossTotals {
  double loss_sum = 0;  // summed cross-entropy of the counted target tokens
  double tokens = 0;    // target tokens counted
  void add(const kernels::CrossEntropyResult& ce);
  double mean() const;  // per target token (0 tokens: the sum itself)
  double perplexity() const;
};

// The summed cross-entropy of a batch's logits [B, T, V] against its
// targets, masked by tgt_mask. With `tp` the logits are this rank's columns
// of the vocabulary (`shard`) and the loss is computed vocabulary-parallel
// over `tp`; else by the fused kernel.
kernels::CrossEntropyResult batch_cross_entropy(const torch::Tensor& logits, const data::Seq2SeqBatch& batch,
                                                double label_smoothing, parallel::Communicator* tp = nullptr,
                                                const parallel::VocabShard* shard = nullptr);

// A whole model on one process, in eval mode, without gradients, on its
// device: samples [0, count) of `source` in order, `batch_size` at a time.
// `after_batch`, when given, hears the samples and the totals so far after
// each batch (for progress lines).
LossTotals dataset_loss(models::Seq2SeqTransformer& model, const data::BatchSource& source,
                        const data::SpecialTokens& special, int64_t count, int64_t batch_size, torch::Device device,
                        const std::function<void(int64_t samples, const LossTotals& totals)>& after_batch = {});

}  // namespace moetrain::eval
