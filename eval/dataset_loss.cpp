#include "eval/dataset_loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace moetrain::eval {

void LossTotals::add(const kernels::CrossEntropyResult& ce) {
  loss_sum += ce.loss_sum.item<double>();
  tokens += static_cast<double>(ce.num_tokens);
}

double LossTotals::mean() const { return loss_sum / std::max(tokens, 1.0); }

double LossTotals::perplexity() const { return std::exp(mean()); }

kernels::CrossEntropyResult batch_cross_entropy(const torch::Tensor& logits, const data::Seq2SeqBatch& batch,
                                                double label_smoothing, parallel::Communicator* tp,
                                                const parallel::VocabShard* shard) {
  const auto flat = logits.reshape({-1, logits.size(-1)});
  const auto targets = batch.tgt_out.reshape({-1});
  const auto mask = batch.tgt_mask.reshape({-1});
  if (tp) return parallel::vocab_parallel_cross_entropy(flat, targets, mask, *shard, label_smoothing, tp);
  return kernels::softmax_cross_entropy(flat, targets, mask, label_smoothing);
}

LossTotals dataset_loss(models::Seq2SeqTransformer& model, const data::BatchSource& source,
                        const data::SpecialTokens& special, int64_t count, int64_t batch_size, torch::Device device,
                        const std::function<void(int64_t samples, const LossTotals& totals)>& after_batch) {
  torch::NoGradGuard no_grad;
  model->eval();
  LossTotals totals;
  for (int64_t first = 0; first < count; first += batch_size) {
    std::vector<data::Seq2SeqSample> samples;
    for (int64_t k = first; k < std::min(count, first + batch_size); ++k) samples.push_back(source.sample(k));
    const auto b = data::BatchSource::collate(samples, special).to(device);
    const auto logits = model->forward(b.src_tokens, b.src_mask, b.tgt_in, b.tgt_mask).logits;
    totals.add(batch_cross_entropy(logits, b, 0.0));
    if (after_batch) after_batch(std::min(count, first + batch_size), totals);
  }
  return totals;
}

}  // namespace moetrain::eval
