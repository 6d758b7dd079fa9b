// Stats to and from JSON, merging, the summary table (see stats.h).
#include "data/clean/stats.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace moetrain::data::clean {

nlohmann::json stats_to_json(const ShardStats& s) {
  nlohmann::json stages = nlohmann::json::array();
  for (const auto& st : s.stages) {
    stages.push_back({{"name", st.name},
                      {"docs_in", st.docs_in},
                      {"docs_out", st.docs_out},
                      {"bytes_in", st.bytes_in},
                      {"bytes_out", st.bytes_out},
                      {"removed", st.removed},
                      {"replaced", st.replaced},
                      {"seconds", st.seconds}});
  }
  nlohmann::json examples = nlohmann::json::array();
  for (const auto& b : s.bad_examples) examples.push_back({{"file", b.file}, {"line", b.line}, {"reason", b.reason}});
  return {{"records", s.records},
          {"bad_records", {{"count", s.bad_records}, {"by_reason", s.bad_by_reason}, {"records", examples}}},
          {"stages", stages},
          {"kept", {{"documents", s.kept_docs}, {"bytes", s.kept_bytes}}}};
}

ShardStats stats_from_json(const nlohmann::json& j) {
  ShardStats s;
  s.records = j.at("records").get<int64_t>();
  const auto& bad = j.at("bad_records");
  s.bad_records = bad.at("count").get<int64_t>();
  s.bad_by_reason = bad.at("by_reason").get<std::map<std::string, int64_t>>();
  for (const auto& b : bad.at("records"))
    s.bad_examples.push_back(
        {b.at("file").get<std::string>(), b.at("line").get<int64_t>(), b.at("reason").get<std::string>()});
  for (const auto& st : j.at("stages")) {
    StageStats x;
    x.name = st.at("name").get<std::string>();
    x.docs_in = st.at("docs_in").get<int64_t>();
    x.docs_out = st.at("docs_out").get<int64_t>();
    x.bytes_in = st.at("bytes_in").get<int64_t>();
    x.bytes_out = st.at("bytes_out").get<int64_t>();
    x.removed = st.at("removed").get<std::map<std::string, int64_t>>();
    x.replaced = st.at("replaced").get<std::map<std::string, int64_t>>();
    x.seconds = st.at("seconds").get<double>();
    s.stages.push_back(std::move(x));
  }
  s.kept_docs = j.at("kept").at("documents").get<int64_t>();
  s.kept_bytes = j.at("kept").at("bytes").get<int64_t>();
  return s;
}

void merge_stats(ShardStats& into, const ShardStats& from, size_t max_examples) {
  into.records += from.records;
  into.bad_records += from.bad_records;
  for (const auto& [k, v] : from.bad_by_reason) into.bad_by_reason[k] += v;
  for (const auto& b : from.bad_examples)
    if (into.bad_examples.size() < max_examples) into.bad_examples.push_back(b);
  for (const auto& st : from.stages) {
    auto it =
        std::find_if(into.stages.begin(), into.stages.end(), [&](const StageStats& x) { return x.name == st.name; });
    if (it == into.stages.end()) {
      into.stages.push_back(st);
      continue;
    }
    it->docs_in += st.docs_in;
    it->docs_out += st.docs_out;
    it->bytes_in += st.bytes_in;
    it->bytes_out += st.bytes_out;
    for (const auto& [k, v] : st.removed) it->removed[k] += v;
    for (const auto& [k, v] : st.replaced) it->replaced[k] += v;
    it->seconds += st.seconds;
  }
  into.kept_docs += from.kept_docs;
  into.kept_bytes += from.kept_bytes;
}

namespace {
std::string top_counts(const nlohmann::json& counts, size_t n) {
  std::vector<std::pair<int64_t, std::string>> items;
  for (auto it = counts.begin(); it != counts.end(); ++it) items.emplace_back(it.value().get<int64_t>(), it.key());
  std::sort(items.begin(), items.end(),
            [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  std::string out;
  for (size_t i = 0; i < items.size() && i < n; ++i) {
    if (!out.empty()) out += ", ";
    out += items[i].second + " " + std::to_string(items[i].first);
  }
  if (items.size() > n) out += ", ...";
  return out;
}
}  // namespace

std::string format_stats_table(const nlohmann::json& stats) {
  std::ostringstream out;
  char line[512];
  std::snprintf(line, sizeof(line), "%-10s %9s %9s %9s %10s %10s %8s  %s\n", "stage", "docs in", "docs out", "removed",
                "MB in", "MB out", "seconds", "removed by reason / replaced by type");
  out << line;
  for (const auto& st : stats.at("stages")) {
    const int64_t in = st.at("docs_in"), kept = st.at("docs_out");
    std::string detail = top_counts(st.at("removed"), 4);
    const std::string replaced = top_counts(st.at("replaced"), 7);
    if (!replaced.empty()) detail += (detail.empty() ? "" : "; ") + std::string("replaced: ") + replaced;
    std::snprintf(line, sizeof(line), "%-10s %9lld %9lld %9lld %10.2f %10.2f %8.2f  %s\n",
                  st.at("name").get<std::string>().c_str(), static_cast<long long>(in), static_cast<long long>(kept),
                  static_cast<long long>(in - kept), st.at("bytes_in").get<double>() / 1e6,
                  st.at("bytes_out").get<double>() / 1e6, st.at("seconds").get<double>(), detail.c_str());
    out << line;
  }
  const auto& bad = stats.at("bad_records");
  out << "records read: " << stats.at("records").get<int64_t>()
      << ", bad records skipped: " << bad.at("count").get<int64_t>();
  if (bad.at("count").get<int64_t>() > 0) out << " (" << top_counts(bad.at("by_reason"), 4) << ")";
  out << "\nkept: " << stats.at("kept").at("documents").get<int64_t>() << " documents, "
      << stats.at("kept").at("bytes").get<int64_t>() / 1e6 << " MB\n";
  return out.str();
}

}  // namespace moetrain::data::clean
