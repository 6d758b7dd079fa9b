// e2e_dump_logits CHECKPOINT SOURCES TARGETS OUT [SRC_LANG TGT_LANG]:
// moetrain's logits for sentence pairs, for tests that compare them with
// another implementation.
//
// Line i of SOURCES and of TARGETS is pair i. Each is tokenized with the
// checkpoint's tokenizer and made a sample as `moetrain tokenize` (with
// --src-lang/--tgt-lang when given) and the seq2seq objective make them
// (language code, if any, source tokens, EOS; language code, target tokens,
// EOS; decoder input: decoder start + target[:-1]); the model runs in eval
// mode with dropless MoE. OUT (.safetensors) receives
//   src_tokens, src_mask, tgt_in, tgt_mask  [B, S] / [B, T] int64 (masks 0/1):
//       all pairs as one batch, right-padded with the pad id;
//   logits                                   [B, T, V] fp32: that batch's;
//   row_K.logits                             [1, T_K, V] fp32: pair K alone,
//       unpadded.
// Exits 1 with one line on stderr when something is wrong.
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_model.h"
#include "data/batch_source.h"
#include "data/tokenizer.h"
#include "export/safetensors.h"

namespace {

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace moetrain;
  if (argc != 5 && argc != 7) {
    std::cerr << "usage: e2e_dump_logits CHECKPOINT SOURCES TARGETS OUT.safetensors [SRC_LANG TGT_LANG]" << std::endl;
    return 2;
  }
  try {
    checkpoint::CheckpointModel m = checkpoint::load_checkpoint_model(argv[1], "", /*dropless_moe=*/true);
    const data::Tokenizer tok = data::Tokenizer::load(m.tokenizer);
    const data::SpecialTokens& special = tok.special_tokens();
    const auto sources = read_lines(argv[2]);
    const auto targets = read_lines(argv[3]);
    if (sources.empty() || sources.size() != targets.size()) {
      throw std::runtime_error("want as many target lines as source lines (at least one), got " +
                               std::to_string(sources.size()) + " and " + std::to_string(targets.size()));
    }
    std::vector<data::Seq2SeqSample> samples;
    for (size_t i = 0; i < sources.size(); ++i) {
      data::Seq2SeqSample s;
      if (argc == 7) {
        s.source.push_back(tok.language_code_id(argv[5]));
        s.target.push_back(tok.language_code_id(argv[6]));
      }
      for (int32_t id : tok.encode(sources[i])) s.source.push_back(id);
      s.source.push_back(special.eos);
      for (int32_t id : tok.encode(targets[i])) s.target.push_back(id);
      s.target.push_back(special.eos);
      samples.push_back(std::move(s));
    }
    torch::NoGradGuard no_grad;
    auto logits_of = [&m](const data::Seq2SeqBatch& b) {
      return m.model->forward(b.src_tokens, b.src_mask, b.tgt_in, b.tgt_mask).logits.to(torch::kFloat).contiguous();
    };
    const data::Seq2SeqBatch batch = data::BatchSource::collate(samples, special);
    exporting::NamedTensors out = {{"src_tokens", batch.src_tokens},
                                   {"src_mask", batch.src_mask.to(torch::kLong)},
                                   {"tgt_in", batch.tgt_in},
                                   {"tgt_mask", batch.tgt_mask.to(torch::kLong)},
                                   {"logits", logits_of(batch)}};
    for (size_t i = 0; i < samples.size(); ++i) {
      out.emplace_back("row_" + std::to_string(i) + ".logits",
                       logits_of(data::BatchSource::collate({samples[i]}, special)));
    }
    exporting::write_safetensors(argv[4], out);
    std::cout << "wrote the logits of " << samples.size() << " pairs (batch " << c10::str(batch.src_tokens.sizes())
              << " -> " << c10::str(batch.tgt_in.sizes()) << ") to " << argv[4] << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "e2e_dump_logits: " << e.what() << std::endl;
    return 1;
  }
}
