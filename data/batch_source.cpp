// BatchSource: shard loading, the blended mixture index, the per-dataset
// per-epoch permutation, and collation.
#include "data/batch_source.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/portable_rng.h"

namespace moetrain::data {
namespace {

namespace fs = std::filesystem;

// Domain tags keep the permutation's seeds apart from the corruption seeds.
constexpr uint64_t kPermutationTag = 0x7065726d75746531ULL;  // "permute1"
constexpr uint64_t kCorruptionTag = 0x636f727275707431ULL;   // "corrupt1"
constexpr uint64_t kDatasetTag = 0x6461746173657431ULL;      // "dataset1"

// A pseudo-random permutation of [0, n): a 6-round balanced Feistel network on
// the smallest even number of bits covering n, with cycle walking to stay
// below n. It is a bijection for any key, costs O(1) per index and needs no
// per-epoch state, so any rank can ask for any slot of any epoch.
uint64_t permute_index(uint64_t x, uint64_t n, uint64_t key) {
  if (n <= 1) return x;
  int bits = 0;
  while (bits < 64 && (uint64_t{1} << bits) < n) ++bits;
  if (bits % 2 == 1) ++bits;
  const int half = bits / 2;
  const uint64_t mask = (uint64_t{1} << half) - 1;
  do {
    uint64_t left = x >> half;
    uint64_t right = x & mask;
    for (uint64_t round = 0; round < 6; ++round) {
      uint64_t f = mix64(key ^ mix64((round << 56) ^ right)) & mask;
      uint64_t next_right = left ^ f;
      left = right;
      right = next_right;
    }
    x = (left << half) | right;
  } while (x >= n);
  return x;
}

bool has_glob_chars(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

std::vector<std::string> glob_paths(const std::string& pattern) {
  glob_t g{};
  int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> out;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  globfree(&g);
  std::sort(out.begin(), out.end());  // glob sorts by locale; make it bytewise
  return out;
}

}  // namespace

std::vector<std::string> resolve_shard_paths(const std::string& path, const std::string& split) {
  if (path.empty()) throw std::runtime_error("no " + split + " data path configured");
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path manifest = fs::path(path) / "dataset.json";
    if (fs::exists(manifest)) {
      // The manifest is the commit marker of `moetrain tokenize`: trust its
      // list over whatever else lies in the folder.
      nlohmann::json j;
      try {
        std::ifstream in(manifest);
        j = nlohmann::json::parse(in);
      } catch (const std::exception& e) {
        throw std::runtime_error("cannot read " + manifest.string() + ": " + e.what());
      }
      const auto splits = j.find("splits");
      if (splits == j.end() || !splits->contains(split) || !(*splits)[split].contains("shards") ||
          (*splits)[split]["shards"].empty())
        throw std::runtime_error(manifest.string() + " lists no '" + split + "' shards");
      std::vector<std::string> out;
      for (const auto& name : (*splits)[split]["shards"]) {
        fs::path p = fs::path(path) / name.get<std::string>();
        if (!fs::exists(p)) throw std::runtime_error(manifest.string() + " lists " + p.string() + ", which is missing");
        out.push_back(p.string());
      }
      return out;
    }
    std::vector<std::string> out = glob_paths((fs::path(path) / (split + "-*.h5")).string());
    if (out.empty()) throw std::runtime_error("no " + split + "-*.h5 shards in directory " + path);
    return out;
  }
  if (has_glob_chars(path)) {
    std::vector<std::string> out = glob_paths(path);
    if (out.empty()) throw std::runtime_error("no files match " + split + " data pattern " + path);
    return out;
  }
  if (!fs::exists(path, ec)) throw std::runtime_error(split + " data path does not exist: " + path);
  return {path};
}

std::string resolve_tokenizer_path(const DataConfig& cfg) {
  std::string path = cfg.tokenizer;
  if (path.empty()) {
    const std::string& train = cfg.mixture.empty() ? cfg.train : cfg.mixture.front().path;
    if (train.empty()) throw std::runtime_error("no tokenizer configured and no train data to find one beside");
    std::error_code ec;
    fs::path dir = fs::is_directory(train, ec) ? fs::path(train) : fs::path(train).parent_path();
    path = (dir / "tokenizer.model").string();
  }
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw std::runtime_error("tokenizer model does not exist: " + path);
  return path;
}

BatchSource::BatchSource(const DataConfig& cfg, const SpecialTokens& special, uint64_t seed, const std::string& split)
    : cfg_(cfg), special_(special), seed_(seed), split_(split) {
  if (split != "train" && split != "valid")
    throw std::invalid_argument("split must be 'train' or 'valid', got '" + split + "'");
  // The datasets: the mixture's for training when it is set, else one path.
  const bool mixture = split == "train" && !cfg.mixture.empty();
  std::vector<MixtureEntry> entries;
  if (mixture) {
    if (!cfg.train.empty()) throw std::invalid_argument("data.train and data.mixture are both set; give one of them");
    entries = cfg.mixture;
  } else {
    const std::string& path = split == "train" ? cfg.train : cfg.valid;
    if (path.empty()) throw std::runtime_error("no " + split + " data configured (data." + split + " is empty)");
    entries.push_back({path, 1.0, ""});
  }
  std::vector<double> weights;
  for (const auto& e : entries) weights.push_back(e.weight);
  index_ = std::make_unique<MixtureIndex>(weights);
  if (cfg.src_len < 1 || cfg.tgt_len < 1) throw std::invalid_argument("src_len and tgt_len must be >= 1");

  if (cfg.objective == Objective::SpanCorruption) {
    lengths_ = span_corruption_lengths(cfg.src_len, cfg.tgt_len, cfg.noise_density, cfg.mean_noise_span);
    const NoiseSpanCounts counts = noise_span_counts(lengths_.raw_length, cfg.noise_density, cfg.mean_noise_span);
    if (counts.num_spans > static_cast<int64_t>(special.sentinels.size()))
      throw std::runtime_error("span corruption of " + std::to_string(lengths_.raw_length) + " tokens needs " +
                               std::to_string(counts.num_spans) + " sentinel tokens, the tokenizer has " +
                               std::to_string(special.sentinels.size()));
  }

  datasets_.resize(entries.size());
  for (size_t d = 0; d < entries.size(); ++d) {
    Dataset& ds = datasets_[d];
    ds.path = entries[d].path;
    names_.push_back(mixture_entry_name(entries[d]));
    // Dataset 0 keeps the run's seed, so a mixture of one is the plain path.
    ds.seed = d == 0 ? seed : combine_seeds({seed, kDatasetTag, static_cast<uint64_t>(d)});
    const std::string label =
        mixture ? "data.mixture dataset '" + names_[d] + "' (" + ds.path + ")" : split + " data " + ds.path;
    if (mixture && ds.path.empty()) throw std::runtime_error(label + " has no path");
    std::vector<std::string> shards;
    try {
      shards = resolve_shard_paths(ds.path, split);
    } catch (const std::runtime_error& e) {
      if (!mixture) throw;
      throw std::runtime_error("data.mixture dataset '" + names_[d] + "': " + e.what());
    }
    load(ds, shards, label);
    shard_paths_.insert(shard_paths_.end(), shards.begin(), shards.end());
    num_samples_ += ds.num_samples;
    // One tokenizer serves every dataset, so their vocabularies must agree.
    if (ds.vocab_size != datasets_.front().vocab_size)
      throw std::runtime_error(label + " has vocab_size " + std::to_string(ds.vocab_size) + ", dataset '" +
                               names_.front() + "' has " + std::to_string(datasets_.front().vocab_size) +
                               ": every dataset of a mixture must use the same tokenizer");
  }

  // The tokenizer and the shards must agree, or the model sees nonsense ids.
  const int64_t vocab_size = datasets_.front().vocab_size;
  std::vector<int64_t> ids = {special.pad, special.eos, special.bos, special.decoder_start};
  ids.insert(ids.end(), special.sentinels.begin(), special.sentinels.end());
  for (int64_t id : ids)
    if (id < 0 || id >= vocab_size)
      throw std::runtime_error("special token id " + std::to_string(id) + " is outside the vocabulary of " +
                               datasets_.front().path + " (vocab_size " + std::to_string(vocab_size) +
                               "): tokenizer and shards do not match");
}

void BatchSource::load(Dataset& ds, const std::vector<std::string>& shards, const std::string& label) const {
  ds.tokens = open_token_store(shards, cfg_.objective, special_.eos, ds.path, cfg_.streaming);
  ds.vocab_size = ds.tokens->vocab_size();
  if (cfg_.objective == Objective::SpanCorruption) {
    const int64_t length = ds.tokens->stream_length();
    ds.num_samples = length / lengths_.raw_length;
    if (ds.num_samples == 0)
      throw std::runtime_error(label + " has " + std::to_string(length) +
                               " tokens (EOS included), fewer than one span-corruption sample of " +
                               std::to_string(lengths_.raw_length));
  } else {
    ds.num_samples = ds.tokens->num_pairs();
    if (ds.num_samples == 0) throw std::runtime_error(label + " holds no pairs");
  }
}

int64_t BatchSource::num_samples(int64_t dataset) const {
  if (dataset < 0 || dataset >= num_datasets())
    throw std::out_of_range("dataset " + std::to_string(dataset) + " not in [0, " + std::to_string(num_datasets()) +
                            ")");
  return datasets_[static_cast<size_t>(dataset)].num_samples;
}

std::vector<int64_t> BatchSource::mixture_position(int64_t step, int64_t global_batch) const {
  if (step < 0 || global_batch < 1) throw std::invalid_argument("step must be >= 0 and global_batch >= 1");
  return index_->counts_at(step * global_batch);
}

int64_t BatchSource::epoch_of(int64_t step, int64_t global_batch) const {
  const std::vector<int64_t> counts = mixture_position(step, global_batch);
  int64_t epoch = 0;
  for (size_t d = 0; d < datasets_.size(); ++d) epoch = std::max(epoch, counts[d] / datasets_[d].num_samples);
  return epoch;
}

SampleOrigin BatchSource::origin_of(const MixtureIndex::Draw& draw) const {
  const Dataset& ds = datasets_[static_cast<size_t>(draw.dataset)];
  SampleOrigin o;
  o.dataset = draw.dataset;
  o.draw = draw.draw;
  o.epoch = draw.draw / ds.num_samples;
  const int64_t slot = draw.draw % ds.num_samples;
  if (!cfg_.shuffle) {
    o.index = slot;
  } else {
    const uint64_t key = combine_seeds({ds.seed, kPermutationTag, static_cast<uint64_t>(o.epoch)});
    o.index =
        static_cast<int64_t>(permute_index(static_cast<uint64_t>(slot), static_cast<uint64_t>(ds.num_samples), key));
  }
  return o;
}

SampleOrigin BatchSource::origin(int64_t k) const {
  if (k < 0) throw std::out_of_range("negative sample index");
  return origin_of(index_->draw(k));
}

Seq2SeqSample BatchSource::sample(int64_t k) const { return sample_at(origin(k)); }

Seq2SeqSample BatchSource::sample_at(const SampleOrigin& o) const {
  const Dataset& ds = datasets_[static_cast<size_t>(o.dataset)];
  if (cfg_.objective == Objective::SpanCorruption) return span_corruption_sample(ds, o.epoch, o.index);
  return pair_sample(ds, o.index);
}

Seq2SeqSample BatchSource::span_corruption_sample(const Dataset& ds, int64_t epoch, int64_t window) const {
  const int64_t raw = lengths_.raw_length;
  std::vector<int64_t> tokens = ds.tokens->stream(window * raw, (window + 1) * raw);
  const uint64_t seed =
      combine_seeds({ds.seed, kCorruptionTag, static_cast<uint64_t>(epoch), static_cast<uint64_t>(window)});
  CorruptedSpans c =
      corrupt_spans(tokens, cfg_.noise_density, cfg_.mean_noise_span, special_.sentinels, special_.eos, seed);
  return {std::move(c.input), std::move(c.target)};
}

Seq2SeqSample BatchSource::pair_sample(const Dataset& ds, int64_t pair) const {
  // Each side cut to its length - 1 tokens, then EOS.
  auto side = [&](bool target, int64_t max_len) {
    std::vector<int64_t> out = ds.tokens->pair_side(pair, target, max_len - 1);
    out.push_back(special_.eos);
    return out;
  };
  return {side(false, cfg_.src_len), side(true, cfg_.tgt_len)};
}

Seq2SeqBatch BatchSource::collate(const std::vector<Seq2SeqSample>& samples, const SpecialTokens& special) {
  if (samples.empty()) throw std::invalid_argument("cannot collate an empty micro-batch");
  const int64_t batch = static_cast<int64_t>(samples.size());
  int64_t src_len = 0, tgt_len = 0;
  for (const auto& s : samples) {
    src_len = std::max<int64_t>(src_len, s.source.size());
    tgt_len = std::max<int64_t>(tgt_len, s.target.size());
  }
  Seq2SeqBatch b;
  b.src_tokens = torch::full({batch, src_len}, special.pad, torch::kInt64);
  b.src_mask = torch::zeros({batch, src_len}, torch::kBool);
  b.tgt_in = torch::full({batch, tgt_len}, special.pad, torch::kInt64);
  b.tgt_out = torch::full({batch, tgt_len}, special.pad, torch::kInt64);
  b.tgt_mask = torch::zeros({batch, tgt_len}, torch::kBool);
  auto src = b.src_tokens.accessor<int64_t, 2>();
  auto src_mask = b.src_mask.accessor<bool, 2>();
  auto tin = b.tgt_in.accessor<int64_t, 2>();
  auto tout = b.tgt_out.accessor<int64_t, 2>();
  auto tmask = b.tgt_mask.accessor<bool, 2>();
  for (int64_t i = 0; i < batch; ++i) {
    const auto& s = samples[i];
    for (size_t t = 0; t < s.source.size(); ++t) {
      src[i][t] = s.source[t];
      src_mask[i][t] = true;
    }
    for (size_t t = 0; t < s.target.size(); ++t) {
      tout[i][t] = s.target[t];
      tin[i][t] = t == 0 ? special.decoder_start : s.target[t - 1];  // teacher forcing: shift right
      tmask[i][t] = true;
    }
    b.num_source_tokens += static_cast<int64_t>(s.source.size());
    b.num_target_tokens += static_cast<int64_t>(s.target.size());
  }
  return b;
}

std::vector<Seq2SeqBatch> BatchSource::step_batches(int64_t step, int64_t dp_rank, int64_t dp_size,
                                                    int64_t global_batch, int64_t micro_batch) const {
  if (step < 0) throw std::invalid_argument("step must be >= 0");
  if (dp_size < 1 || dp_rank < 0 || dp_rank >= dp_size)
    throw std::invalid_argument("dp_rank " + std::to_string(dp_rank) + " not in [0, " + std::to_string(dp_size) + ")");
  if (global_batch < 1 || micro_batch < 1) throw std::invalid_argument("global_batch and micro_batch must be >= 1");
  if (global_batch % dp_size != 0)
    throw std::invalid_argument("global_batch " + std::to_string(global_batch) + " is not divisible by dp_size " +
                                std::to_string(dp_size));
  const int64_t per_rank = global_batch / dp_size;
  if (per_rank % micro_batch != 0)
    throw std::invalid_argument("global_batch / dp_size = " + std::to_string(per_rank) +
                                " is not divisible by micro_batch " + std::to_string(micro_batch));
  const int64_t first = step * global_batch + dp_rank * per_rank;
  // The rank's share of the blended index in one pass (O(per_rank) when the
  // previous call asked for the step before).
  const std::vector<MixtureIndex::Draw> draws = index_->draws(first, per_rank);
  std::vector<Seq2SeqBatch> out;
  out.reserve(static_cast<size_t>(per_rank / micro_batch));
  for (int64_t m = 0; m < per_rank; m += micro_batch) {
    std::vector<Seq2SeqSample> samples;
    samples.reserve(static_cast<size_t>(micro_batch));
    for (int64_t j = 0; j < micro_batch; ++j) samples.push_back(sample_at(origin_of(draws[m + j])));
    out.push_back(collate(samples, special_));
  }
  return out;
}

}  // namespace moetrain::data
