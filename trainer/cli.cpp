#include "trainer/cli.h"

#include <mpi.h>

#include <boost/program_options.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "data/batch_source.h"
#include "data/hdf5_file.h"
#include "data/tokenize.h"
#include "data/tokenizer.h"
#include "parallel/comm_benchmark.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"
#include "parallel/process_grid.h"
#include "trainer/checkpoint.h"
#include "trainer/clean_command.h"
#include "trainer/command_line.h"
#include "trainer/config.h"
#include "eval/generate.h"
#include "eval/metrics.h"
#include "kernels/cross_entropy.h"
#include "trainer/export.h"
#include "trainer/trainer.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace moetrain::trainer {
namespace {

constexpr const char* kUsage =
    "usage: moetrain <command> [options]\n"
    "\n"
    "commands:\n"
    "  train      train or fine-tune a model from a YAML config\n"
    "  tokenize   train (or load) a SentencePiece model and write HDF5 token shards\n"
    "  clean      clean a corpus: normalise, dedup, quality, domain, toxicity, PII\n"
    "  augment    write augmented copies of records (EDA operations, name swaps)\n"
    "  export     write a checkpoint as model.safetensors, config.json and the tokenizer for serving\n"
    "  generate   generate from a checkpoint: greedy, beam search or sampling, one output line per input line\n"
    "  eval       score hypotheses against references (BLEU, chrF, chrF++, ROUGE-L, WER, PER), or a checkpoint's loss and perplexity on a dataset\n"
    "  bench      benchmarks: `moetrain bench comm` (collective latency and bandwidth)\n"
    "\n"
    "`moetrain <command> --help` lists the options of a command.\n";

int cmd_train(int argc, char** argv) {
  std::string config_path, output_dir, resume, init_from;
  std::vector<std::string> overrides;
  int64_t max_steps = 0;
  po::options_description options("train options");
  options.add_options()
      ("help,h", "show this help")
      ("config,c", po::value(&config_path), "YAML config file")
      ("set", po::value(&overrides)->composing(), "override a config key: --set optim.lr=1e-3 (repeatable)")
      ("output-dir,o", po::value(&output_dir), "run directory: config.yaml, metrics.jsonl, checkpoints/ (default runs/<config name>)")
      ("max-steps", po::value(&max_steps), "same as --set train.max_steps=N")
      ("resume", po::value(&resume), "resume from this checkpoint or run directory (default: the newest complete checkpoint in --output-dir)")
      ("init-from", po::value(&init_from), "start a new run from the weights of this checkpoint");
  const auto vm = parse_command_line(argc, argv, options, "train");
  if (vm.count("help")) return 0;
  if (vm.count("max-steps")) overrides.push_back("train.max_steps=" + std::to_string(max_steps));
  if (config_path.empty() && overrides.empty()) throw UsageError("train: --config FILE is required");
  for (const auto& [flag, path] : {std::pair<const char*, std::string>{"--resume", resume}, {"--init-from", init_from}}) {
    if (!path.empty() && !fs::exists(path)) {
      throw UsageError(std::string("train: ") + flag + ": checkpoint not found: " + path);
    }
  }
  if (output_dir.empty()) {
    output_dir = "runs/" + (config_path.empty() ? std::string("run") : fs::path(config_path).stem().string());
  }

  ConfigSource source;
  Config config = load_config(config_path, overrides, &source);
  // One process, or every rank of an mpirun job.
  std::shared_ptr<parallel::Communicator> world = parallel::make_world_communicator(config.parallel.timeout_s);
  validate_config(config, world->size(), source);

  std::string tok_path;
  try {
    tok_path = data::resolve_tokenizer_path(config.data);
  } catch (const std::runtime_error& e) {
    throw ConfigError(std::string("data.tokenizer: ") + e.what() +
                      " (run `moetrain tokenize` first or set data.tokenizer)");
  }
  const auto tokenizer = data::Tokenizer::load(tok_path);
  if (config.model.vocab_size == 0) {
    config.model.vocab_size = tokenizer.vocab_size();
  } else if (config.model.vocab_size < tokenizer.vocab_size()) {
    throw ConfigError("model.vocab_size: " + std::to_string(config.model.vocab_size) +
                      " is smaller than the tokenizer's " + std::to_string(tokenizer.vocab_size()) +
                      source.where("model.vocab_size"));
  }

  TrainOptions train_options;
  train_options.output_dir = output_dir;
  train_options.resume = resume;
  train_options.init_from = init_from;
  return train_run(config, world, train_options);
}

int cmd_tokenize(int argc, char** argv) {
  data::TokenizeOptions o;
  po::options_description options("tokenize options");
  options.add_options()
      ("help,h", "show this help")
      ("input,i", po::value(&o.inputs)->multitoken()->required(), ".jsonl, .jsonl.zst or text files (text: documents separated by blank lines)")
      ("output,o", po::value(&o.output_dir)->required(), "output directory: tokenizer.model, train-*.h5, valid-*.h5, dataset.json")
      ("vocab-size", po::value(&o.vocab_size)->default_value(o.vocab_size), "SentencePiece vocabulary size when training one")
      ("text-field", po::value(&o.text_field)->default_value(o.text_field), "JSONL field holding a document")
      ("source-field", po::value(&o.source_field), "JSONL field of the source side (pairs mode, with --target-field)")
      ("target-field", po::value(&o.target_field), "JSONL field of the target side (pairs mode)")
      ("tokenizer", po::value(&o.tokenizer_model), "use this existing SentencePiece .model instead of training one")
      ("model-type", po::value(&o.model_type)->default_value(o.model_type), "unigram or bpe")
      ("valid-fraction", po::value(&o.valid_fraction)->default_value(o.valid_fraction), "fraction of documents held out as the valid split")
      ("valid-input", po::value(&o.valid_inputs)->multitoken(), "files whose records all go to the valid split (not used to train the tokenizer)")
      ("docs-per-shard", po::value(&o.docs_per_shard)->default_value(o.docs_per_shard), "documents (or pairs) per HDF5 shard")
      ("max-sentences", po::value(&o.max_training_sentences)->default_value(o.max_training_sentences), "cap on sentences used to train the tokenizer")
      ("seed", po::value(&o.seed)->default_value(o.seed), "seed for the valid split and tokenizer training");
  const auto vm = parse_command_line(argc, argv, options, "tokenize");
  if (vm.count("help")) return 0;
  if (o.source_field.empty() != o.target_field.empty()) {
    throw UsageError("tokenize: --source-field and --target-field go together");
  }
  for (const auto& input : o.inputs) {
    if (!fs::is_regular_file(input)) throw UsageError("tokenize: input not found: " + input);
  }
  for (const auto& input : o.valid_inputs) {
    if (!fs::is_regular_file(input)) throw UsageError("tokenize: --valid-input not found: " + input);
  }
  const auto s = data::tokenize_corpus(o);
  std::cout << (s.trained_tokenizer ? "trained " : "loaded ") << "tokenizer " << s.tokenizer_path
            << " (vocab " << s.vocab_size;
  if (s.trained_tokenizer) std::cout << ", " << s.training_sentences << " training sentences";
  std::cout << ")\n"
            << s.input_records << " " << s.kind << " read, " << s.skipped_empty << " empty skipped\n";
  for (const auto* split : {&s.train, &s.valid}) {
    if (split->records == 0) continue;
    std::cout << (split == &s.train ? "train" : "valid") << ": " << split->records << " " << s.kind
              << ", " << split->tokens << " tokens in " << split->shards.size() << " shard(s)\n";
  }
  std::cout << "wrote " << s.dataset_json << std::endl;
  return 0;
}

// `moetrain bench comm`: latency and bus bandwidth of every collective by
// message size, like nccl-tests, on MPI (CPU tensors) or NCCL (CUDA tensors).
int cmd_bench(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "comm") {
    throw UsageError("bench: expected a benchmark name: `moetrain bench comm [options]`");
  }
  std::string device = "cpu", dtype = "fp32";
  std::vector<std::string> ops;
  int64_t min_bytes = 1024, max_bytes = 64ll << 20;
  int warmup = 5, iters = 20;
  double timeout_s = 300;
  po::options_description options("bench comm options");
  options.add_options()
      ("help,h", "show this help")
      ("device", po::value(&device)->default_value(device), "cpu (MPI backend) or cuda (NCCL backend, one GPU per rank)")
      ("op", po::value(&ops)->composing(), "all_reduce, reduce_scatter, all_gather, broadcast, all_to_all, send_recv (repeatable; default all)")
      ("min-bytes", po::value(&min_bytes)->default_value(min_bytes), "smallest message")
      ("max-bytes", po::value(&max_bytes)->default_value(max_bytes), "largest message (sizes grow x4)")
      ("dtype", po::value(&dtype)->default_value(dtype), "fp32 or bf16")
      ("warmup", po::value(&warmup)->default_value(warmup), "untimed iterations per size")
      ("iters", po::value(&iters)->default_value(iters), "timed iterations per size (the median is reported)")
      ("timeout", po::value(&timeout_s)->default_value(timeout_s), "seconds before a stuck collective aborts the job");
  const auto vm = parse_command_line(argc - 1, argv + 1, options, "bench comm");
  if (vm.count("help")) return 0;
  if (min_bytes < 4 || max_bytes < min_bytes) throw UsageError("bench comm: need 4 <= --min-bytes <= --max-bytes");
  if (dtype != "fp32" && dtype != "bf16") throw UsageError("bench comm: --dtype must be fp32 or bf16");
  if (device != "cpu" && device != "cuda") throw UsageError("bench comm: --device must be cpu or cuda");

  parallel::CommBenchOptions o;
  o.sizes_bytes.clear();
  for (int64_t b = min_bytes; b <= max_bytes; b *= 4) o.sizes_bytes.push_back(b);
  o.warmup = warmup;
  o.iters = iters;
  o.dtype = dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
  if (!ops.empty()) o.ops = ops;
  auto world = parallel::make_world_communicator(timeout_s);
  std::unique_ptr<parallel::Communicator> comm;
  if (device == "cuda") {
    if (!torch::cuda::is_available()) throw UsageError("bench comm: --device cuda but no CUDA device is available");
    if (!parallel::nccl_compiled()) throw UsageError("bench comm: this build has no NCCL backend");
    const int local = static_cast<int>(world->rank() % torch::cuda::device_count());
    comm = parallel::make_nccl_communicator(*world, local, timeout_s);
    o.device = torch::Device(torch::kCUDA, local);
  }
  parallel::Communicator& c = comm ? *comm : *world;
  // The first collectives on a communicator set up its connections: keep
  // that out of the smallest size's figure.
  for (int i = 0; i < 10; ++i) {
    auto t = torch::ones({1024}, torch::TensorOptions().device(o.device));
    c.all_reduce(t);
  }
  parallel::run_comm_benchmark(c, o, std::cout);
  return 0;
}

int cmd_export(int argc, char** argv) {
  ExportOptions o;
  po::options_description options("export options");
  options.add_options()
      ("help,h", "show this help")
      ("checkpoint", po::value(&o.checkpoint), "checkpoint directory, or a run directory (its newest checkpoint)")
      ("out", po::value(&o.out), "output directory (created if missing)")
      ("dtype", po::value(&o.dtype)->default_value(o.dtype), "fp32, bf16 or fp16")
      ("tokenizer", po::value(&o.tokenizer), "SentencePiece model to ship (default: the one the run's config names)")
      ("max-shard-bytes", po::value(&o.max_shard_bytes)->default_value(o.max_shard_bytes),
       "split model.safetensors into shards of at most this many bytes, with an index")
      ("format", po::value(&o.format)->default_value(o.format),
       "auto, moetrain or nllb-moe: parameter names and config.json (auto: NLLB-MoE's when the architecture is "
       "NLLB-MoE's)")
      ("adapter-only", po::bool_switch(&o.adapter_only),
       "a LoRA checkpoint's adapters alone, PEFT-style (adapter_config.json, adapter_model.safetensors); without "
       "it LoRA is merged into the weights");
  const auto vm = parse_command_line(argc, argv, options, "export");
  if (vm.count("help")) return 0;
  if (o.checkpoint.empty() || o.out.empty()) throw UsageError("export: --checkpoint DIR and --out DIR are required");
  if (!fs::exists(o.checkpoint)) throw UsageError("export: --checkpoint: not found: " + o.checkpoint);
  if (o.max_shard_bytes < 1) throw UsageError("export: --max-shard-bytes must be positive");
  const ExportSummary s = export_checkpoint(o);
  std::cout << "exported " << s.checkpoint << " (step " << s.step << "): " << s.tensors << " tensors, "
            << s.parameters << " parameters, " << s.bytes << " bytes as " << o.dtype << " with " << s.format
            << " names -> " << o.out << ":";
  for (const auto& f : s.files) std::cout << " " << f;
  std::cout << std::endl;
  if (!s.format_reason.empty()) std::cout << "not in the nllb-moe format: " << s.format_reason << std::endl;
  if (s.lora_scale > 0) {
    std::cout << (o.adapter_only ? "LoRA adapters written alone (PEFT layout), scale "
                                 : "LoRA adapters merged into the weights in fp32: W + scale * B A, scale ")
              << s.lora_scale << std::endl;
  }
  return 0;
}

// The lines of a text file; throws UsageError naming the flag when it
// cannot be read.
std::vector<std::string> read_lines(const std::string& path, const std::string& flag) {
  std::ifstream in(path);
  if (!in) throw UsageError(flag + ": cannot read " + path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

// Where generate and eval run the model: --device cpu|cuda, --dtype fp32|bf16|fp16.
struct Placement {
  std::string device = "cpu", dtype = "fp32";
  torch::Device where() const { return device == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU); }
  torch::ScalarType scalar_type() const { return to_scalar_type(parse_compute_dtype(dtype)); }
};

void add_placement_options(po::options_description& options, Placement& p) {
  options.add_options()
      ("device", po::value(&p.device)->default_value(p.device), "cpu or cuda (the first GPU)")
      ("dtype", po::value(&p.dtype)->default_value(p.dtype), "fp32, bf16 or fp16: the dtype the model computes in");
}

// Checks --device and --dtype before anything is loaded (UsageError naming `command`).
void check_placement(const Placement& p, const std::string& command) {
  if (p.device != "cpu" && p.device != "cuda") {
    throw UsageError(command + ": --device must be cpu or cuda, got '" + p.device + "'");
  }
  if (p.device == "cuda" && !torch::cuda::is_available()) {
    throw UsageError(command + ": --device cuda, but no CUDA device is available");
  }
  try {
    p.scalar_type();
  } catch (const std::invalid_argument&) {
    throw UsageError(command + ": --dtype must be fp32, bf16 or fp16, got '" + p.dtype + "'");
  }
}

int cmd_generate(int argc, char** argv) {
  std::string checkpoint, input, output, method = "greedy", tokenizer;
  Placement placement;
  eval::GenerateOptions g;
  int64_t batch_size = 32;
  po::options_description options("generate options");
  options.add_options()
      ("help,h", "show this help")
      ("checkpoint", po::value(&checkpoint), "checkpoint directory, or a run directory (its newest checkpoint)")
      ("input", po::value(&input), "text file: one source per line")
      ("output", po::value(&output), "where to write one output per line (default: standard output)")
      ("method", po::value(&method)->default_value(method), "greedy, beam or sample")
      ("beam-size", po::value(&g.beam_size)->default_value(g.beam_size), "beams (beam search)")
      ("length-penalty", po::value(&g.length_penalty)->default_value(g.length_penalty),
       "beam search ranks log-probability / length^penalty")
      ("temperature", po::value(&g.temperature)->default_value(g.temperature), "sampling temperature")
      ("top-p", po::value(&g.top_p)->default_value(g.top_p), "sampling nucleus mass (1: no truncation)")
      ("max-length", po::value(&g.max_length)->default_value(g.max_length), "most tokens generated per output")
      ("batch-size", po::value(&batch_size)->default_value(batch_size), "sources per batch")
      ("seed", po::value(&g.seed)->default_value(g.seed), "sampling seed")
      ("tokenizer", po::value(&tokenizer), "SentencePiece model (default: the one the run's config names)");
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
  check_placement(placement, "generate");
  const auto sources = read_lines(input, "generate: --input");
  // Dropless MoE: an output does not depend on the rest of its batch.
  CheckpointModel m = load_checkpoint_model(checkpoint, tokenizer, /*dropless_moe=*/true);
  m.model->place(placement.where(), placement.scalar_type());
  const auto tok = data::Tokenizer::load(m.tokenizer);
  const auto& special = tok.special_tokens();
  g.bos = special.bos;
  g.eos = special.eos;
  g.pad = special.pad;
  std::ofstream file;
  if (!output.empty()) {
    file.open(output);
    if (!file) throw UsageError("generate: --output: cannot write " + output);
  }
  std::ostream& out = output.empty() ? std::cout : file;
  const int64_t max_source = std::max<int64_t>(m.config.data.src_len, 2);
  for (size_t first = 0; first < sources.size(); first += static_cast<size_t>(batch_size)) {
    const size_t last = std::min(sources.size(), first + static_cast<size_t>(batch_size));
    // Each source as in training: its tokens, cut to src_len - 1, then EOS.
    std::vector<data::Seq2SeqSample> samples;
    for (size_t i = first; i < last; ++i) {
      const auto ids = tok.encode(sources[i]);
      data::Seq2SeqSample sample;
      sample.source.assign(ids.begin(),
                           ids.begin() + std::min<int64_t>(static_cast<int64_t>(ids.size()), max_source - 1));
      sample.source.push_back(special.eos);
      sample.target = {special.eos};
      samples.push_back(std::move(sample));
    }
    const auto batch = data::BatchSource::collate(samples, special);
    for (const auto& generated : eval::generate(*m.model, batch.src_tokens, batch.src_mask, g)) {
      out << tok.decode(generated.tokens) << "\n";
    }
    out.flush();
  }
  return 0;
}

// `moetrain eval --checkpoint --data`: the model's mean cross-entropy per
// target token over every pair (or span-corruption window) of a split, in
// order, and its perplexity.
int eval_dataset_loss(const std::string& checkpoint, const std::string& data_path, const std::string& split,
                      const std::string& tokenizer, int64_t batch_size, int64_t max_samples,
                      const Placement& placement) {
  if (batch_size < 1) throw UsageError("eval: --batch-size must be at least 1");
  check_placement(placement, "eval");
  CheckpointModel m = load_checkpoint_model(checkpoint, tokenizer);
  m.model->place(placement.where(), placement.scalar_type());
  const auto device = placement.where();
  const auto special = data::Tokenizer::load(m.tokenizer).special_tokens();
  data::DataConfig cfg = m.config.data;
  cfg.train = data_path;
  cfg.valid = data_path;
  cfg.mixture.clear();
  cfg.shuffle = false;
  std::optional<data::BatchSource> source;
  try {
    source.emplace(cfg, special, m.config.train.seed, split);
  } catch (const std::runtime_error& e) {
    throw UsageError(std::string("eval: --data: ") + e.what());
  }
  int64_t n = source->num_samples();
  if (max_samples > 0) n = std::min(n, max_samples);
  torch::NoGradGuard no_grad;
  double loss_sum = 0;
  int64_t tokens = 0;
  for (int64_t first = 0; first < n; first += batch_size) {
    std::vector<data::Seq2SeqSample> samples;
    for (int64_t k = first; k < std::min(n, first + batch_size); ++k) samples.push_back(source->sample(k));
    const auto b = data::BatchSource::collate(samples, special);
    const auto tgt_mask = b.tgt_mask.to(device);
    const auto logits =
        m.model->forward(b.src_tokens.to(device), b.src_mask.to(device), b.tgt_in.to(device), tgt_mask).logits;
    const auto ce = kernels::softmax_cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                   b.tgt_out.to(device).reshape({-1}), tgt_mask.reshape({-1}), 0.0);
    loss_sum += ce.loss_sum.item<double>();
    tokens += ce.num_tokens;
  }
  const double loss = loss_sum / static_cast<double>(std::max<int64_t>(tokens, 1));
  std::cout << std::fixed << std::setprecision(4) << "loss " << loss << " per target token, perplexity "
            << std::exp(loss) << " (" << tokens << " target tokens in " << n << " samples of the " << split
            << " split of " << data_path << ", checkpoint " << m.checkpoint << ")\n";
  return 0;
}

int cmd_eval(int argc, char** argv) {
  std::string hypotheses, metrics = "bleu,chrf,chrf++,rouge-l,wer,per";
  std::vector<std::string> references;
  std::string checkpoint, data_path, split = "valid", tokenizer;
  int64_t batch_size = 64, max_samples = 0;
  Placement placement;
  po::options_description options("eval options");
  options.add_options()
      ("help,h", "show this help")
      ("checkpoint", po::value(&checkpoint),
       "with --data: report this checkpoint's loss and perplexity (a checkpoint or run directory)")
      ("data", po::value(&data_path), "token shards as `moetrain tokenize` writes them (a directory, .h5 or glob)")
      ("split", po::value(&split)->default_value(split), "valid or train: which shards of --data")
      ("batch-size", po::value(&batch_size)->default_value(batch_size), "samples per forward pass")
      ("max-samples", po::value(&max_samples)->default_value(max_samples), "score only the first N samples (0: all)")
      ("tokenizer", po::value(&tokenizer), "SentencePiece model (default: the one the run's config names)")
      ("hypotheses", po::value(&hypotheses), "text file: one output per line")
      ("references", po::value(&references)->composing(),
       "text file: one reference per line (repeatable for several references; ROUGE-L uses the first; for WER, PER "
       "and SER the closest counts and an empty line is no reference)")
      ("metrics", po::value(&metrics)->default_value(metrics),
       "comma-separated: bleu, chrf, chrf++, rouge-l, wer (word edit distance / reference words), per (the same "
       "over space-separated symbols, e.g. phonemes), ser (share of lines not exactly right)");
  add_placement_options(options, placement);  // --checkpoint with --data
  const auto vm = parse_command_line(argc, argv, options, "eval");
  if (vm.count("help")) return 0;
  if (!checkpoint.empty() || !data_path.empty()) {
    if (checkpoint.empty() || data_path.empty()) throw UsageError("eval: --checkpoint DIR and --data PATH go together");
    if (split != "valid" && split != "train") throw UsageError("eval: --split must be valid or train, got " + split);
    return eval_dataset_loss(checkpoint, data_path, split, tokenizer, batch_size, max_samples, placement);
  }
  if (hypotheses.empty() || references.empty()) {
    throw UsageError("eval: --hypotheses FILE and --references FILE are required (or --checkpoint and --data)");
  }
  const auto hyps = read_lines(hypotheses, "eval: --hypotheses");
  std::vector<std::vector<std::string>> refs;
  for (const auto& path : references) {
    refs.push_back(read_lines(path, "eval: --references"));
    if (refs.back().size() != hyps.size()) {
      throw UsageError("eval: " + path + " has " + std::to_string(refs.back().size()) + " lines but " + hypotheses +
                       " has " + std::to_string(hyps.size()));
    }
  }
  std::cout << std::fixed << std::setprecision(4);
  std::stringstream list(metrics);
  for (std::string name; std::getline(list, name, ',');) {
    if (name == "bleu") {
      const auto b = eval::corpus_bleu(hyps, refs);
      std::cout << "BLEU " << b.score << " (" << b.precisions[0] << "/" << b.precisions[1] << "/" << b.precisions[2]
                << "/" << b.precisions[3] << ", BP " << b.brevity_penalty << ", hyp_len " << b.hypothesis_length
                << ", ref_len " << b.reference_length << ")\n";
    } else if (name == "chrf" || name == "chrf++") {
      eval::ChrfOptions o;
      o.word_order = name == "chrf" ? 0 : 2;
      std::cout << (name == "chrf" ? "chrF " : "chrF++ ") << eval::corpus_chrf(hyps, refs, o) << "\n";
    } else if (name == "rouge-l") {
      std::cout << "ROUGE-L " << eval::rouge_l(hyps, refs[0]) << "\n";
    } else if (name == "wer" || name == "per") {
      const auto e = eval::token_error_rate(hyps, refs);
      std::cout << (name == "wer" ? "WER " : "PER ") << 100 * e.rate() << "% (" << e.errors << " edits / "
                << e.total << " reference tokens)\n";
    } else if (name == "ser") {
      const auto e = eval::segment_error_rate(hyps, refs);
      std::cout << "SER " << 100 * e.rate() << "% (" << e.errors << " of " << e.total << " lines wrong)\n";
    } else {
      throw UsageError("eval: --metrics: unknown metric '" + name + "' (bleu, chrf, chrf++, rouge-l, wer, per, ser)");
    }
  }
  return 0;
}

}  // namespace

int run_cli(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  // Under mpirun every rank runs the CLI. Config and usage errors are the same
  // on every rank: rank 0 alone reports them and all exit 2. A runtime
  // failure may hit one rank only: it reports with its rank and aborts the
  // job, so no peer waits for it.
  int rank = 0, world_size = 1, mpi_up = 0;
  auto world_info = [&] {
    MPI_Initialized(&mpi_up);
    if (mpi_up) {
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    }
  };
  auto report = [&](const std::string& line, int code, bool same_on_every_rank) {
    world_info();
    if (same_on_every_rank) {
      if (rank == 0) std::cerr << line << std::endl;
      return code;
    }
    std::cerr << (world_size > 1 ? "rank " + std::to_string(rank) + ": " : std::string()) << line << std::endl;
    if (world_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
    return code;
  };
  try {
    if (command == "train") return cmd_train(argc - 1, argv + 1);
    if (command == "tokenize") return cmd_tokenize(argc - 1, argv + 1);
    if (command == "bench") return cmd_bench(argc - 1, argv + 1);
    if (command == "clean") return run_clean_command(argc - 1, argv + 1);
    if (command == "augment") return run_augment_command(argc - 1, argv + 1);
    if (command == "export") return cmd_export(argc - 1, argv + 1);
    if (command == "generate") return cmd_generate(argc - 1, argv + 1);
    if (command == "eval") return cmd_eval(argc - 1, argv + 1);
    std::cerr << "moetrain: unknown command '" << command
              << "' (commands: train, tokenize, clean, augment, export, generate, eval, bench; see moetrain --help)"
              << std::endl;
    return 2;
  } catch (const UsageError& e) {
    return report(std::string("moetrain: ") + e.what(), 2, true);
  } catch (const ConfigError& e) {
    return report(std::string("moetrain: config error: ") + e.what(), 2, true);
  } catch (const parallel::LayoutError& e) {
    return report(std::string("moetrain: config error: parallel: ") + e.what(), 2, true);
  } catch (const c10::Error& e) {
    return report("moetrain: " + command + " failed: " + e.what_without_backtrace(), 1, false);
  } catch (const std::exception& e) {
    return report("moetrain: " + command + " failed: " + e.what(), 1, false);
  }
}

}  // namespace moetrain::trainer
