#include "app/generate_dataset.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <vector>

#include "app/command_line.h"
#include "data/atomic_file.h"
#include "data/line_reader.h"
#include "monitor/progress.h"
#include "parallel/mpi_runtime.h"

namespace fs = std::filesystem;

namespace moetrain::app {

namespace {

std::string part_name(int rank, int ranks) {
  char name[64];
  std::snprintf(name, sizeof(name), "part-%05d-of-%05d", rank, ranks);
  return name;
}

// Refuses a folder holding parts of a run with another number of ranks.
void check_rank_count(const std::string& dir, int ranks) {
  const std::regex part(R"(part-\d{5}-of-(\d{5})\.(jsonl|done))");
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, m, part) && std::stoi(m[1].str()) != ranks) {
      throw UsageError("generate: --as-dataset: " + dir + " holds " + name + ", written by a run of " +
                       std::to_string(std::stoi(m[1].str())) + " rank(s); this one has " + std::to_string(ranks) +
                       " (rerun with as many, or write to a new folder)");
    }
  }
}

// The pairs already in `path` (its complete lines), after cutting off a
// partial last line. Reads the part in blocks: it may be larger than memory.
int64_t keep_complete_lines(const std::string& path) {
  if (!fs::exists(path)) return 0;
  std::ifstream in(path, std::ios::binary);
  std::vector<char> block(1 << 20);
  int64_t lines = 0, offset = 0, keep = 0;  // keep: the byte after the last '\n'
  while (in.read(block.data(), static_cast<std::streamsize>(block.size())) || in.gcount() > 0) {
    const auto n = static_cast<int64_t>(in.gcount());
    for (int64_t i = 0; i < n; ++i) {
      if (block[static_cast<size_t>(i)] != '\n') continue;
      ++lines;
      keep = offset + i + 1;
    }
    offset += n;
  }
  in.close();
  if (keep < offset) fs::resize_file(path, static_cast<uintmax_t>(keep));
  return lines;
}

// The source of one input line: the line itself, or its JSON record's field.
std::string source_of(const std::string& line, const std::string& field, const data::LineReader& reader) {
  if (field.empty()) return line;
  const auto where = [&] {
    return "generate: --input: " + reader.path() + ":" + std::to_string(reader.line_number()) + ": ";
  };
  nlohmann::json record;
  try {
    record = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception&) {
    throw UsageError(where() + "not a JSON object");
  }
  if (!record.is_object() || !record.contains(field) || !record[field].is_string()) {
    throw UsageError(where() + "no string field '" + field + "'");
  }
  return record[field].get<std::string>();
}

int64_t count_lines(const std::string& input) {
  data::LineReader reader(input);
  std::string line;
  int64_t n = 0;
  while (reader.next(line)) ++n;
  return n;
}

}  // namespace

void generate_dataset(SourceGenerator& generator, const std::string& input, const std::string& source_field,
                      const std::string& dir, int64_t batch_size) {
  const int rank = parallel::world_rank(), ranks = parallel::world_size();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) throw UsageError("generate: --as-dataset: cannot create the folder " + dir);
  check_rank_count(dir, ranks);
  const std::string base = dir + "/" + part_name(rank, ranks);
  if (fs::exists(base + ".done")) {
    std::cout << "generate: rank " << rank << ": " << base << ".jsonl is complete already" << std::endl;
    return;
  }
  const int64_t lines = count_lines(input);
  const int64_t mine = lines / ranks + (rank < lines % ranks ? 1 : 0);
  const int64_t done = keep_complete_lines(base + ".jsonl");
  if (done > mine) {
    throw UsageError("generate: --as-dataset: " + base + ".jsonl has " + std::to_string(done) +
                     " pairs, more than this rank's share of " + input + " (" + std::to_string(mine) +
                     "): a different input?");
  }
  if (done > 0) std::cout << "generate: rank " << rank << ": resuming after " << done << " pairs" << std::endl;
  std::ofstream out(base + ".jsonl", std::ios::app | std::ios::binary);
  if (!out) throw UsageError("generate: --as-dataset: cannot write " + base + ".jsonl");

  monitor::Progress progress(ranks > 1 ? "generate, rank " + std::to_string(rank) : "generate", "pairs", mine);
  data::LineReader reader(input);
  std::string line;
  std::vector<std::string> sources;
  int64_t index = 0, seen = 0, written = done;
  double tokens = 0;
  const auto flush = [&] {
    const auto outputs = generator.generate(sources, tokens);
    for (size_t i = 0; i < sources.size(); ++i)
      out << nlohmann::json{{"source", sources[i]}, {"target", outputs[i]}}.dump() << "\n";
    out.flush();
    if (!out) throw std::runtime_error("generate: --as-dataset: writing " + base + ".jsonl failed (disk full?)");
    written += static_cast<int64_t>(sources.size());
    sources.clear();
    progress.update(written, {{"tokens", tokens}});
  };
  for (; reader.next(line); ++index) {
    if (index % ranks != rank) continue;
    if (seen++ < done) continue;  // written by an earlier run
    sources.push_back(source_of(line, source_field, reader));
    if (static_cast<int64_t>(sources.size()) == batch_size) flush();
  }
  if (!sources.empty()) flush();
  progress.finish();
  out.close();
  data::write_file_atomically(base + ".done", std::to_string(written) + "\n");
  std::cout << "generate: rank " << rank << ": " << written << " pairs in " << base << ".jsonl" << std::endl;
}

}  // namespace moetrain::app
