// `moetrain generate --as-dataset DIR`: a model's outputs (a distillation
// teacher's) over the sources of a training set, written as a pairs dataset
// for `moetrain tokenize` (sequence-level distillation):
//   DIR/part-RRRRR-of-NNNNN.jsonl  {"source": ..., "target": ...} per line:
//                                  rank R's share, the input lines i with
//                                  i % N == R, in input order
//   DIR/part-RRRRR-of-NNNNN.done   written once that part is complete
// The input streams (text with one source per line, or JSONL records whose
// `source_field` holds it; .zst too), so sets larger than memory work.
// Rerunning into DIR resumes: each rank keeps the complete lines of its
// part, drops a partial last one, and goes on after them, which gives what an
// uninterrupted run gives (greedy and beam search are deterministic).
#pragma once

#include <cstdint>
#include <string>

#include "app/generate_sources.h"

namespace moetrain::app {

// Collective over MPI_COMM_WORLD only in that each rank takes its share
// (world_rank / world_size); ranks never wait for each other. Throws
// UsageError for a DIR written with another number of ranks, or naming the
// file and line of an input record without the source field.
void generate_dataset(SourceGenerator& generator, const std::string& input, const std::string& source_field,
                      const std::string& dir, int64_t batch_size);

}  // namespace moetrain::app
