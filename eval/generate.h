// Autoregressive generation with the encoder-decoder: greedy, beam search,
// and sampling with temperature and nucleus (top-p) truncation, batched.
//
// The source is encoded once and projected once per decoder layer for
// cross-attention; each step runs the decoder on the newest token only,
// against the keys and values of the earlier ones
// (Seq2SeqTransformerImpl::decode_step), so a step costs one position. Generation of a sequence ends at EOS
// (not included in the output) or after max_length tokens.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "models/seq2seq_transformer.h"

namespace moetrain::eval {

enum class DecodeMethod { Greedy, Beam, Sample };
enum class BeamStop { Heuristic, Never };

// "greedy", "beam" or "sample"; throws std::invalid_argument naming them.
DecodeMethod parse_decode_method(const std::string& name);
// "heuristic" or "never" (GenerateOptions::beam_stop); throws
// std::invalid_argument naming them.
BeamStop parse_beam_stop(const std::string& name);

struct GenerateOptions {
  DecodeMethod method = DecodeMethod::Greedy;
  int64_t max_length = 128;  // generated tokens, EOS excluded
  int64_t beam_size = 4;     // Beam
  // Beam: finished hypotheses rank by log-probability / length^penalty
  // (0: raw log-probability; 1: per-token average).
  double length_penalty = 1.0;
  // Beam: when a search stops. Heuristic (transformers' default,
  // early_stopping=False): once beam_size hypotheses have finished and no
  // open beam's score at its current length beats the beam_size-th best.
  // Never (transformers' early_stopping="never"): an open beam is bounded by
  // the best score it could still reach, its log-probability over the
  // longest length, max_length + 1 (with EOS); then the search returns the
  // best hypothesis the beams can find. The two differ only with a positive
  // length penalty, where an open beam's score can still rise.
  BeamStop beam_stop = BeamStop::Heuristic;
  double temperature = 1.0;  // Sample: logits / temperature (> 0)
  double top_p = 1.0;        // Sample: keep the smallest set of tokens whose probability reaches top_p
  uint64_t seed = 0;         // Sample
  // The decoder starts with decoder_start (the tokenizer's; bos in moetrain's
  // layout), then generates, its first tokens forced to `forced_prefix` (the
  // target language code of an NLLB model, which transformers forces as the
  // first generated token): a forced token adds 0 to the log-probability and
  // counts in the length.
  int64_t decoder_start = 3, eos = 1, pad = 0;
  std::vector<int64_t> forced_prefix;
};

struct Generated {
  std::vector<int64_t> tokens;  // the forced prefix, then what was generated; no decoder start, no EOS
  double log_prob = 0;          // sum of the chosen tokens' log-probabilities (EOS included when reached)
};

// One result per row of src_tokens [B, S] (src_mask [B, S], true = real
// token; both moved to the model's device). The model is put in eval mode. Throws std::invalid_argument for
// bad options (max_length < 1, beam_size < 1, temperature <= 0, top_p
// outside (0, 1]).
std::vector<Generated> generate(models::Seq2SeqTransformerImpl& model, const torch::Tensor& src_tokens,
                                const torch::Tensor& src_mask, const GenerateOptions& options);

// The log-probability the model gives `tokens` (then EOS when `with_eos`)
// as the continuation of decoder_start for one source row; for tests and
// rescoring (forced_prefix is not applied).
double sequence_log_prob(models::Seq2SeqTransformerImpl& model, const torch::Tensor& src_tokens,
                         const torch::Tensor& src_mask, const std::vector<int64_t>& tokens, bool with_eos,
                         const GenerateOptions& options);

}  // namespace moetrain::eval
