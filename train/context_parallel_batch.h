// A micro-batch as one rank of a context-parallel group sees it: both
// sequences padded to a multiple of 2 * cp (with pad_id, masked out: padding
// changes no real token's output or loss) and cut by the layout of
// parallel/context_parallel.h, so the rank holds one early and one late chunk
// of every sample's source and target.
#pragma once

#include <cstdint>

#include "data/batch.h"

namespace moetrain::train {

// `batch` (host tensors) for CP rank `rank` of `cp`; its token counts are
// this rank's, so summing them over the group gives the batch's. cp = 1:
// the batch itself.
data::Seq2SeqBatch context_parallel_part(const data::Seq2SeqBatch& batch, int64_t cp, int64_t rank, int64_t pad_id);

}  // namespace moetrain::train
