#include "app/generate_sources.h"

#include <algorithm>

#include "data/batch_source.h"

namespace moetrain::app {

std::vector<std::string> SourceGenerator::generate(const std::vector<std::string>& sources, double& tokens) {
  const auto& special = tokenizer.special_tokens();
  std::vector<data::Seq2SeqSample> samples;
  for (const auto& source : sources) {
    const auto ids = tokenizer.encode(source);
    const auto prefix = static_cast<int64_t>(source_prefix.size());
    const auto keep =
        std::max<int64_t>(0, std::min<int64_t>(static_cast<int64_t>(ids.size()), max_source - 1 - prefix));
    data::Seq2SeqSample sample;
    sample.source = source_prefix;
    sample.source.insert(sample.source.end(), ids.begin(), ids.begin() + keep);
    sample.source.push_back(special.eos);
    sample.target = {special.eos};
    samples.push_back(std::move(sample));
  }
  const auto batch = data::BatchSource::collate(samples, special);
  std::vector<std::string> outputs;
  for (const auto& generated : eval::generate(*model.model, batch.src_tokens, batch.src_mask, options)) {
    outputs.push_back(tokenizer.decode(generated.tokens));
    tokens += static_cast<double>(generated.tokens.size());
  }
  return outputs;
}

}  // namespace moetrain::app
