// The cleaning pipeline: shards, the two dedup passes, atomic outputs and
// resume (see pipeline.h); the steps themselves are in stage_runner.cpp.
#include "data/clean/pipeline.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "data/atomic_file.h"
#include "data/clean/dedup.h"
#include "data/clean/record_io.h"
#include "data/clean/stage_runner.h"
#include "data/clean/stats.h"

namespace moetrain::data::clean {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool file_exists(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

// ---------------------------------------------------------------------------
// One shard's outputs while it is being written.
class ShardWork {
 public:
  ShardWork(const Shard& shard, const std::string& out, const std::vector<std::string>& steps)
      : shard_(shard), dir_(out + "/.shards/" + shard.name), kept_path_(out + "/kept/" + shard.name + ".jsonl") {
    remove_tree(dir_);  // parts of an attempt that did not commit
    fs::create_directories(dir_);
    kept_ = std::make_unique<LineWriter>(kept_path_ + ".partial");
    for (const auto& s : steps) {
      StageStats st;
      st.name = s;
      stats.stages.push_back(st);
    }
  }

  StageStats& stage(size_t i) { return stats.stages[i]; }

  void reject(const std::string& step, const Doc& doc, const Removal& removal) {
    auto& w = rejected_[step];
    if (!w) w = std::make_unique<LineWriter>(dir_ + "/rejected-" + step + ".jsonl.partial");
    nlohmann::json line = {{"id", doc.record.id},
                           {"stage", step},
                           {"reason", removal.reason},
                           {"file", shard_.path},
                           {"line", doc.record.line}};
    for (auto it = removal.details.begin(); it != removal.details.end(); ++it) line[it.key()] = it.value();
    line["text"] = doc.text;
    w->write(line.dump());
  }

  void keep(const std::string& line, size_t text_bytes) {
    kept_->write(line);
    stats.kept_docs += 1;
    stats.kept_bytes += static_cast<int64_t>(text_bytes);
  }

  // Renames every part into place, then writes the commit marker.
  void commit() {
    for (auto& [step, w] : rejected_) {
      w->close();
      const std::string final_path = w->path().substr(0, w->path().size() - std::strlen(".partial"));
      commit_temporary(w->path(), final_path);
    }
    kept_->close();
    commit_temporary(kept_->path(), kept_path_);
    write_file_atomically(dir_ + "/stats.json", stats_to_json(stats).dump(1) + "\n");
  }

  ShardStats stats;
  std::vector<Doc> cache;  // documents that reached the dedup step (pass 1 -> pass 2)
  bool cache_complete = true;

 private:
  const Shard& shard_;
  std::string dir_, kept_path_;
  std::unique_ptr<LineWriter> kept_;
  std::map<std::string, std::unique_ptr<LineWriter>> rejected_;
};

std::string shard_name(size_t index, const std::string& path) {
  std::string stem = fs::path(path).filename().string();
  for (const char* ext : {".zst", ".jsonl", ".json", ".txt"})
    if (stem.size() > std::strlen(ext) && stem.compare(stem.size() - std::strlen(ext), std::string::npos, ext) == 0)
      stem.erase(stem.size() - std::strlen(ext));
  for (char& ch : stem)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.') ch = '_';
  char prefix[32];
  std::snprintf(prefix, sizeof(prefix), "%05zu-", index);
  return prefix + stem;
}

Bytes to_bytes(const void* data, size_t n) {
  Bytes b(n);
  if (n) std::memcpy(b.data(), data, n);
  return b;
}

template <class T>
std::vector<T> from_bytes(const std::vector<Bytes>& parts) {
  std::vector<T> out;
  for (const auto& p : parts) {
    const size_t n = p.size() / sizeof(T);
    const size_t at = out.size();
    out.resize(at + n);
    if (n) std::memcpy(out.data() + at, p.data(), n * sizeof(T));
  }
  return out;
}

class Pipeline {
 public:
  Pipeline(const CleanConfig& c, Exchange& ex, CleanProgressFn progress)
      : c_(c), ex_(ex), progress_(std::move(progress)) {
    const auto files = expand_input_paths(c.inputs);
    for (size_t i = 0; i < files.size(); ++i) shards_.push_back({i, files[i], shard_name(i, files[i])});
    if (shards_.size() >= (1u << 31)) throw CleanConfigError("input.paths: too many input files");
    runner_ = std::make_unique<StageRunner>(c, shards_);
  }

  PipelineResult run() {
    const auto start = Clock::now();
    prepare_output();
    PipelineResult result;
    result.shards = static_cast<int>(shards_.size());
    std::vector<const Shard*> mine;
    for (const auto& s : shards_)
      if (static_cast<int>(s.index % static_cast<size_t>(ex_.size())) == ex_.rank()) mine.push_back(&s);

    const auto& steps = runner_->steps();
    const size_t d = runner_->dedup_step();
    std::map<size_t, std::unique_ptr<ShardWork>> work;
    for (const Shard* s : mine) {
      if (committed(*s)) {
        ++result.shards_skipped;
        continue;
      }
      work[s->index] = std::make_unique<ShardWork>(*s, c_.output, steps);
    }
    nlohmann::json dedup_info;
    const int passes = d < steps.size() ? 2 : 1;
    if (d < steps.size()) {
      // Pass 1: band entries of every document that reaches the dedup step.
      begin_pass(1, passes, static_cast<int64_t>(mine.size()));
      std::vector<BandEntry> entries;
      int64_t cached_bytes = 0;
      for (const Shard* s : mine) {
        ShardWork* w = work.count(s->index) ? work[s->index].get() : nullptr;
        for_each_document(*s, w, [&](Doc& doc) {
          if (!run_steps(doc, 0, d, w)) return;
          const auto t = Clock::now();
          runner_->band_entries(doc, entries);
          if (w) w->stage(d).seconds += seconds_since(t);
          if (w && w->cache_complete) {
            cached_bytes += static_cast<int64_t>(doc.text.size() + doc.record.raw.size() + 256);
            if (cached_bytes > c_.cache_mb * (int64_t{1} << 20)) {
              w->cache_complete = false;
              w->cache.clear();
              w->cache.shrink_to_fit();
            } else {
              w->cache.push_back(std::move(doc));
            }
          }
        });
        shard_done();
      }
      dedup_info = find_duplicates(entries);
    }
    // Pass 2 (the only pass without dedup): the remaining steps, then commit.
    begin_pass(passes, passes, static_cast<int64_t>(work.size()));
    for (const Shard* s : mine) {
      auto it = work.find(s->index);
      if (it == work.end()) continue;
      ShardWork& w = *it->second;
      if (d < steps.size() && w.cache_complete) {
        for (auto& doc : w.cache) {
          document_read(doc);
          finish(doc, d, w);
        }
        w.cache.clear();
      } else if (d < steps.size()) {
        // Steps before dedup were counted in pass 1: run them again silently.
        for_each_document(*s, nullptr, [&](Doc& doc) {
          if (run_steps(doc, 0, d, nullptr)) finish(doc, d, w);
        });
      } else {
        for_each_document(*s, &w, [&](Doc& doc) { finish(doc, 0, w); });
      }
      w.commit();
      ++result.shards_processed;
      shard_done();
    }
    // Every rank done: rank 0 merges the parts.
    ex_.all_gather(Bytes{1});
    if (ex_.rank() == 0) result.stats = merge_outputs(dedup_info, seconds_since(start));
    ex_.all_gather(Bytes{1});
    return result;
  }

 private:
  // Progress: a new pass over `shards` shards, a document read, a shard done.
  void begin_pass(int pass, int passes, int64_t shards) {
    at_ = CleanProgress{pass, passes, 0, shards, 0, 0};
    if (progress_) progress_(at_);
  }
  void document_read(const Doc& doc) {
    at_.documents += 1;
    at_.bytes += static_cast<int64_t>(doc.record.text.size());
    if (progress_) progress_(at_);
  }
  void shard_done() {
    at_.shards_done += 1;
    if (progress_) progress_(at_);
  }

  std::string shard_dir(const Shard& s) const { return c_.output + "/.shards/" + s.name; }
  bool committed(const Shard& s) const { return file_exists(shard_dir(s) + "/stats.json"); }

  // Checks (every rank) and creates (rank 0) the output folder.
  void prepare_output() {
    nlohmann::json fingerprint = clean_config_to_json(c_);
    fingerprint.erase("output");
    fingerprint.erase("strict");
    fingerprint.erase("cache_mb");
    fingerprint["input"]["paths"] = nlohmann::json::array();
    for (const auto& s : shards_) fingerprint["input"]["paths"].push_back(s.path);
    const std::string marker = c_.output + "/.shards/config.json";
    if (file_exists(marker)) {
      nlohmann::json old;
      try {
        old = nlohmann::json::parse(read_file(marker));
      } catch (const std::exception&) {
      }
      if (old != fingerprint)
        throw CleanConfigError("output: " + c_.output +
                               " holds the output of a different config or input list; use another --output "
                               "folder or remove it");
    }
    if (ex_.rank() == 0) {
      fs::create_directories(c_.output + "/kept");
      fs::create_directories(c_.output + "/rejected");
      fs::create_directories(c_.output + "/.shards");
      // Leftovers of a run that was killed: never part of a result.
      for (const auto& entry : fs::recursive_directory_iterator(c_.output)) {
        const std::string p = entry.path().string();
        if (entry.is_regular_file() && p.size() > 8 && p.compare(p.size() - 8, 8, ".partial") == 0)
          fs::remove(entry.path());
      }
      if (!file_exists(marker)) write_file_atomically(marker, fingerprint.dump(1) + "\n");
    }
    ex_.all_gather(Bytes{1});
  }

  // Reads a shard; bad records are counted into `w` (when given) or skipped.
  template <class F>
  void for_each_document(const Shard& s, ShardWork* w, F&& f) {
    RecordReader reader(s.path, c_.text_field, c_.id_field);
    Doc doc;
    std::string reason;
    while (true) {
      ReadStatus status;
      try {
        status = reader.next(doc.record, reason);
      } catch (const std::exception& e) {
        throw CleanInputError(e.what());
      }
      if (status == ReadStatus::End) break;
      if (w) w->stats.records += 1;
      if (status == ReadStatus::Bad) {
        if (c_.strict)
          throw CleanInputError(s.path + ":" + std::to_string(doc.record.line) + ": " + reason + " (strict)");
        if (w) {
          w->stats.bad_records += 1;
          w->stats.bad_by_reason[reason] += 1;
          if (static_cast<int64_t>(w->stats.bad_examples.size()) < c_.max_bad_record_examples)
            w->stats.bad_examples.push_back({s.path, doc.record.line, reason});
        }
        continue;
      }
      doc.number = (static_cast<uint64_t>(s.index) << 32) | static_cast<uint64_t>(doc.record.line);
      doc.text = doc.record.text;
      doc.meta = nlohmann::json::object();
      document_read(doc);
      f(doc);
    }
  }

  // Steps [from, to); false when one removes the document. `w` null: silent.
  bool run_steps(Doc& doc, size_t from, size_t to, ShardWork* w) {
    const auto& steps = runner_->steps();
    for (size_t i = from; i < to; ++i) {
      StageStats* st = w ? &w->stage(i) : nullptr;
      const auto t = Clock::now();
      if (st) {
        st->docs_in += 1;
        st->bytes_in += static_cast<int64_t>(doc.text.size());
      }
      auto removal = runner_->apply(steps[i], doc, st);
      if (st) st->seconds += seconds_since(t);
      if (removal) {
        if (w) {
          st->removed[removal->reason] += 1;
          w->reject(steps[i], doc, *removal);
        }
        return false;
      }
      if (st) {
        st->docs_out += 1;
        st->bytes_out += static_cast<int64_t>(doc.text.size());
      }
    }
    return true;
  }

  void finish(Doc& doc, size_t from, ShardWork& w) {
    if (!run_steps(doc, from, runner_->steps().size(), &w)) return;
    w.keep(compose_output_line(doc.record, c_.text_field, c_.id_field, doc.text, doc.meta), doc.text.size());
  }

  nlohmann::json find_duplicates(std::vector<BandEntry>& entries) {
    const auto start = Clock::now();
    const int world = ex_.size();
    std::vector<std::vector<BandEntry>> by_owner(static_cast<size_t>(world));
    for (const auto& e : entries) by_owner[static_cast<size_t>(owner_rank(e, world))].push_back(e);
    const size_t local_entries = entries.size();
    entries.clear();
    entries.shrink_to_fit();
    std::vector<Bytes> send;
    for (auto& v : by_owner) {
      send.push_back(to_bytes(v.data(), v.size() * sizeof(BandEntry)));
      v.clear();
      v.shrink_to_fit();
    }
    auto owned = from_bytes<BandEntry>(ex_.all_to_all(send));
    send.clear();
    const auto local_edges = edges_from_entries(owned);
    const auto edges = from_bytes<DuplicateEdge>(
        ex_.all_gather(to_bytes(local_edges.data(), local_edges.size() * sizeof(DuplicateEdge))));
    auto duplicates = resolve_duplicates(edges);
    const size_t removed = duplicates.size();
    runner_->set_duplicates(std::move(duplicates));
    return {{"band_entries_local", local_entries},
            {"edges", edges.size()},
            {"duplicates", removed},
            {"seconds", seconds_since(start)}};
  }

  nlohmann::json merge_outputs(const nlohmann::json& dedup_info, double seconds) {
    ShardStats total;
    for (const auto& step : runner_->steps()) {
      StageStats st;
      st.name = step;
      total.stages.push_back(st);
    }
    for (const auto& s : shards_) {
      const std::string path = shard_dir(s) + "/stats.json";
      if (!file_exists(path)) throw CleanInputError(path + ": missing after every rank finished");
      merge_stats(total, stats_from_json(nlohmann::json::parse(read_file(path))),
                  static_cast<size_t>(c_.max_bad_record_examples));
    }
    for (const auto& step : runner_->steps()) {
      const std::string out = c_.output + "/rejected/" + step + ".jsonl";
      {
        LineWriter w(out + ".partial");
        for (const auto& s : shards_) {
          std::ifstream in(shard_dir(s) + "/rejected-" + step + ".jsonl", std::ios::binary);
          std::string line;
          while (std::getline(in, line)) w.write(line);
        }
        w.close();
      }
      commit_temporary(out + ".partial", out);
    }
    nlohmann::json stats = stats_to_json(total);
    stats["shards"] = shards_.size();
    stats["ranks"] = ex_.size();
    if (!dedup_info.is_null()) stats["dedup_index"] = dedup_info;
    stats["wall_seconds"] = seconds;
    stats["config"] = clean_config_to_json(c_);
    write_file_atomically(c_.output + "/stats.json", stats.dump(1) + "\n");
    return stats;
  }

  const CleanConfig& c_;
  Exchange& ex_;
  CleanProgressFn progress_;
  CleanProgress at_;
  std::vector<Shard> shards_;
  std::unique_ptr<StageRunner> runner_;
};

}  // namespace

std::vector<std::string> expand_input_paths(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) {
      out.push_back(p);
    } else if (fs::is_directory(p, ec)) {
      std::vector<std::string> files;
      for (const auto& e : fs::recursive_directory_iterator(p)) {
        const std::string name = e.path().filename().string();
        if (e.is_regular_file() && !name.empty() && name[0] != '.') files.push_back(e.path().string());
      }
      std::sort(files.begin(), files.end());
      if (files.empty()) throw CleanConfigError("input.paths: folder has no files: " + p);
      out.insert(out.end(), files.begin(), files.end());
    } else {
      throw CleanConfigError("input.paths: input not found: " + p);
    }
  }
  return out;
}

PipelineResult run_clean_pipeline(const CleanConfig& config, Exchange& exchange, CleanProgressFn progress) {
  validate_clean_config(config);
  Pipeline pipeline(config, exchange, std::move(progress));
  return pipeline.run();
}

}  // namespace moetrain::data::clean
