// `moetrain generate`: greedy, beam or sampled outputs of a checkpoint, one
// per input line; with --as-dataset, a pairs dataset (app/generate_dataset.h).
#include "app/commands.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "app/command_line.h"
#include "app/generate_dataset.h"
#include "app/generate_sources.h"
#include "app/placement.h"
#include "checkpoint/checkpoint_model.h"
#include "data/tokenizer.h"
#include "eval/generate.h"
#include "monitor/progress.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace moetrain::app {

int generate_command(int argc, char** argv) {
  std::string checkpoint, input, output, method = "greedy", beam_stop = "heuristic", tokenizer, source_lang,
                                         target_lang, as_dataset, source_field;
  Placement placement;
  eval::GenerateOptions g;
  int64_t batch_size = 32;
  po::options_description options("generate options");
  // clang-format off
  options.add_options()
      ("help,h", "show this help")
      ("checkpoint", po::value(&checkpoint), "checkpoint directory, or a run directory (its newest checkpoint)")
      ("input", po::value(&input), "text file: one source per line")
      ("output", po::value(&output), "where to write one output per line (default: standard output)")
      ("as-dataset", po::value(&as_dataset),
       "instead of --output: write {source, target} pairs to DIR/part-R-of-N.jsonl for `moetrain tokenize` "
       "(sequence-level distillation; each rank of an mpirun a share; a rerun resumes)")
      ("source-field", po::value(&source_field), "with --as-dataset: --input is JSONL and this field holds the source")
      ("method", po::value(&method)->default_value(method), "greedy, beam or sample")
      ("beam-size", po::value(&g.beam_size)->default_value(g.beam_size), "beams (beam search)")
      ("length-penalty", po::value(&g.length_penalty)->default_value(g.length_penalty),
       "beam search ranks log-probability / length^penalty")
      ("beam-stop", po::value(&beam_stop)->default_value(beam_stop),
       "when a beam search stops: heuristic (transformers' default) or never (only when no open beam can still "
       "win; what CTranslate2 finds, docs/serving.md)")
      ("temperature", po::value(&g.temperature)->default_value(g.temperature), "sampling temperature")
      ("top-p", po::value(&g.top_p)->default_value(g.top_p), "sampling nucleus mass (1: no truncation)")
      ("max-length", po::value(&g.max_length)->default_value(g.max_length), "most tokens generated per output")
      ("batch-size", po::value(&batch_size)->default_value(batch_size), "sources per batch")
      ("seed", po::value(&g.seed)->default_value(g.seed), "sampling seed")
      ("tokenizer", po::value(&tokenizer), "SentencePiece model (default: the one the run's config names)")
      ("src-lang", po::value(&source_lang), "language code written before each source (a tokenizer with language codes, e.g. an imported NLLB model's)")
      ("tgt-lang", po::value(&target_lang), "language code forced as the first generated token");
  // clang-format on
  add_placement_options(options, placement);
  const auto vm = parse_command_line(argc, argv, options, "generate");
  if (vm.count("help")) return 0;
  if (checkpoint.empty() || input.empty()) throw UsageError("generate: --checkpoint DIR and --input FILE are required");
  if (!fs::exists(checkpoint)) throw UsageError("generate: --checkpoint: not found: " + checkpoint);
  if (batch_size < 1) throw UsageError("generate: --batch-size must be at least 1");
  try {
    g.method = eval::parse_decode_method(method);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("generate: --method: ") + e.what());
  }
  try {
    g.beam_stop = eval::parse_beam_stop(beam_stop);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("generate: --beam-stop: ") + e.what());
  }
  if (!as_dataset.empty() && !output.empty())
    throw UsageError("generate: --output and --as-dataset exclude each other");
  if (as_dataset.empty() && !source_field.empty()) throw UsageError("generate: --source-field needs --as-dataset");
  if (!as_dataset.empty() && g.method == eval::DecodeMethod::Sample) {
    throw UsageError("generate: --as-dataset takes greedy or beam decoding (a resumed sampled run would differ)");
  }
  check_placement(placement, "generate");
  // Dropless MoE: an output does not depend on the rest of its batch.
  checkpoint::CheckpointModel m = checkpoint::load_checkpoint_model(checkpoint, tokenizer, /*dropless_moe=*/true);
  m.model->place(placement.where(), placement.scalar_type());
  const auto tok = data::Tokenizer::load(m.tokenizer);
  const auto& special = tok.special_tokens();
  g.decoder_start = special.decoder_start;
  g.eos = special.eos;
  g.pad = special.pad;
  std::vector<int64_t> source_prefix;
  try {
    if (!source_lang.empty()) source_prefix.push_back(tok.language_code_id(source_lang));
    if (!target_lang.empty()) g.forced_prefix.push_back(tok.language_code_id(target_lang));
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("generate: ") + e.what());
  }
  SourceGenerator generator{m, tok, g, source_prefix, std::max<int64_t>(m.config.data.src_len, 2)};
  if (!as_dataset.empty()) {
    generate_dataset(generator, input, source_field, as_dataset, batch_size);
    return 0;
  }
  const auto sources = read_lines(input, "generate: --input");
  std::ofstream file;
  if (!output.empty()) {
    file.open(output);
    if (!file) throw UsageError("generate: --output: cannot write " + output);
  }
  std::ostream& out = output.empty() ? std::cout : file;
  monitor::Progress progress("generate", "lines", static_cast<int64_t>(sources.size()));
  double generated_tokens = 0;
  for (size_t first = 0; first < sources.size(); first += static_cast<size_t>(batch_size)) {
    const size_t last = std::min(sources.size(), first + static_cast<size_t>(batch_size));
    const std::vector<std::string> batch(sources.begin() + static_cast<std::ptrdiff_t>(first),
                                         sources.begin() + static_cast<std::ptrdiff_t>(last));
    for (const auto& text : generator.generate(batch, generated_tokens)) out << text << "\n";
    out.flush();
    progress.update(static_cast<int64_t>(last), {{"tokens", generated_tokens}});
  }
  progress.finish();
  return 0;
}

}  // namespace moetrain::app
