// A context-parallel rank's part of a micro-batch (context_parallel_batch.h).
#include "train/context_parallel_batch.h"

#include "parallel/context_parallel.h"

namespace moetrain::train {
namespace {

// x [B, L] padded along dim 1 to a multiple of `multiple` with `value`.
torch::Tensor pad_to_multiple(const torch::Tensor& x, int64_t multiple, int64_t value) {
  const int64_t length = x.size(1);
  const int64_t padded = (length + multiple - 1) / multiple * multiple;
  if (padded == length) return x;
  return torch::constant_pad_nd(x, {0, padded - length}, value);
}

}  // namespace

data::Seq2SeqBatch context_parallel_part(const data::Seq2SeqBatch& batch, int64_t cp, int64_t rank, int64_t pad_id) {
  if (cp == 1) return batch;
  const int64_t multiple = 2 * cp;
  auto part = [&](const torch::Tensor& x, int64_t value) {
    return parallel::context_parallel_slice(pad_to_multiple(x, multiple, value), 1, cp, rank).contiguous();
  };
  data::Seq2SeqBatch out;
  out.src_tokens = part(batch.src_tokens, pad_id);
  out.src_mask = part(batch.src_mask, 0);
  out.tgt_in = part(batch.tgt_in, pad_id);
  out.tgt_out = part(batch.tgt_out, pad_id);
  out.tgt_mask = part(batch.tgt_mask, 0);
  out.num_source_tokens = out.src_mask.sum().item<int64_t>();
  out.num_target_tokens = out.tgt_mask.sum().item<int64_t>();
  return out;
}

}  // namespace moetrain::train
