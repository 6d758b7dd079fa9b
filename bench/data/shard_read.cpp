// bench_shard_read: how a training run's reads of token shards perform.
//   1. random 512-token windows of one large documents shard, read through
//      HDF5 hyperslabs (Hdf5File::read_slice) and as raw ranges
//      (data/raw_array.h, what the streamed store uses), with the token array
//      uncompressed and compressed (shuffle + deflate, levels 1 and 6), and
//      each file's size. The tokens are random, or with --tokens-from a real
//      shard's (`moetrain tokenize` output), whose compression is realistic;
//   2. opening a dataset of many small shards, streamed and loaded
//      (BatchSource construction).
// The shards are written first into --dir (removed at the end). Prints one
// line per measurement; run it several times and take medians.
#include <boost/program_options.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>

#include "data/atomic_file.h"
#include "data/batch_source.h"
#include "data/hdf5_file.h"
#include "data/raw_array.h"
#include "data/token_shard.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace moetrain::data;

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

DocumentShard random_documents(int64_t tokens_total, int64_t doc_length, uint64_t seed) {
  std::mt19937 gen(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(tokens_total));
  for (auto& t : tokens) t = static_cast<int32_t>(104 + gen() % 800);
  std::vector<int64_t> offsets;
  for (int64_t i = 0; i < tokens_total; i += doc_length) offsets.push_back(i);
  offsets.push_back(tokens_total);
  DocumentShard shard;
  shard.documents = make_token_sequences(tokens, offsets);
  shard.vocab_size = 1000;
  return shard;
}

// Times `reads` windows of `window` tokens at `starts` of the shard at `path`.
void bench_windows(const std::string& path, const std::vector<int64_t>& starts, int64_t window, const char* label) {
  int64_t checksum = 0;
  const double reads = static_cast<double>(starts.size());
  {
    Hdf5File file(path, Hdf5File::Mode::Read);
    const auto t0 = Clock::now();
    for (int64_t s : starts) checksum += file.read_slice("tokens", {s}, {window}).data_ptr<int32_t>()[0];
    std::printf("%s, windows of %lld tokens, HDF5 hyperslab: %.2f us each\n", label, static_cast<long long>(window),
                1e6 * since(t0) / reads);
  }
  {
    const auto arrays = read_raw_arrays(path, {{"tokens", 4}});
    ReadOnlyFile file(path);
    std::vector<int32_t> buffer(static_cast<size_t>(window));
    const auto t0 = Clock::now();
    for (int64_t s : starts) {
      arrays[0].read(file, s, window, buffer.data());
      checksum += buffer[0];
    }
    std::printf("%s, windows of %lld tokens, raw read:       %.2f us each (checksum %lld)\n", label,
                static_cast<long long>(window), 1e6 * since(t0) / reads, static_cast<long long>(checksum % 1000));
  }
}

// The shard written uncompressed and at deflate levels 1 and 6, each read at
// the same random windows.
void bench_compression(const std::string& dir, const DocumentShard& shard, int reads, int64_t window) {
  const int64_t tokens = shard.documents.num_tokens();
  std::mt19937_64 gen(7);
  std::vector<int64_t> starts(static_cast<size_t>(reads));
  for (auto& s : starts) s = static_cast<int64_t>(gen() % static_cast<uint64_t>(tokens - window));
  for (int level : {0, 1, 6}) {
    const std::string path = (fs::path(dir) / ("large-" + std::to_string(level) + ".h5")).string();
    write_document_shard(path, shard, ShardWriteOptions{level});
    char label[64];
    std::snprintf(label, sizeof label, "deflate %d (%.1f MB)", level, static_cast<double>(fs::file_size(path)) / 1e6);
    bench_windows(path, starts, window, label);
    fs::remove(path);
  }
}

void bench_open(const std::string& dir, int shards) {
  fs::create_directories(dir);
  for (int s = 0; s < shards; ++s) {
    char name[32];
    std::snprintf(name, sizeof name, "train-%05d.h5", s);
    write_document_shard((fs::path(dir) / name).string(), random_documents(2000, 40, static_cast<uint64_t>(s)));
  }
  SpecialTokens special;
  for (int i = 0; i < 100; ++i) special.sentinels.push_back(4 + i);
  for (bool streaming : {true, false}) {
    DataConfig cfg;
    cfg.train = dir;
    cfg.src_len = 32;
    cfg.tgt_len = 12;
    cfg.streaming = streaming;
    const auto t0 = Clock::now();
    const BatchSource source(cfg, special, 1, "train");
    std::printf("open %d shards, %s: %.2f s (%lld samples)\n", shards, streaming ? "streamed" : "loaded  ", since(t0),
                static_cast<long long>(source.num_samples()));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = (fs::temp_directory_path() / "moetrain-bench-shard-read").string();
  int64_t tokens = 50'000'000;
  int reads = 20000, shards = 2000;
  std::string tokens_from;
  po::options_description options("bench_shard_read options");
  // clang-format off
  options.add_options()
      ("help,h", "show this help")
      ("dir", po::value(&dir)->default_value(dir), "scratch folder for the shards (removed at the end)")
      ("tokens", po::value(&tokens)->default_value(tokens), "tokens of the large random shard (4 bytes each)")
      ("tokens-from", po::value(&tokens_from), "a documents shard whose tokens replace the random ones")
      ("reads", po::value(&reads)->default_value(reads), "random 512-token windows read each way")
      ("shards", po::value(&shards)->default_value(shards), "small shards of the open benchmark");
  // clang-format on
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, options), vm);
  if (vm.count("help")) {
    std::cout << options;
    return 0;
  }
  po::notify(vm);
  remove_tree(dir);
  fs::create_directories(dir);
  const DocumentShard large =
      tokens_from.empty() ? random_documents(tokens, 1000, 1) : read_document_shard(tokens_from);
  std::printf("large shard: %lld tokens (%s)\n", static_cast<long long>(large.documents.num_tokens()),
              tokens_from.empty() ? "random" : tokens_from.c_str());
  bench_compression(dir, large, reads, 512);
  bench_open((fs::path(dir) / "many").string(), shards);
  remove_tree(dir);
  return 0;
}
