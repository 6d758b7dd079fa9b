// MinHash LSH and union-find (see dedup.h).
#include "data/clean/dedup.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <string>
#include <tuple>

#include "data/clean/text_units.h"

namespace moetrain::data::clean {
namespace {

uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Tokens for shingling: lower-cased words without punctuation, or the
// letters and digits of CJK text one by one. Joined by single spaces into
// `joined`; `ends[k]` is the end offset of token k.
void shingle_tokens(std::string_view text, std::string& joined, std::vector<size_t>& ends) {
  const bool cjk = is_cjk_text(text);
  joined.clear();
  ends.clear();
  size_t i = 0;
  bool in_word = false;
  while (i < text.size()) {
    const char32_t cp = to_lower(next_code_point(text, i));
    const bool keep = is_alnum(cp) || (is_cjk(cp) && cp >= 0x3040);
    if (!keep) {
      if (in_word) ends.push_back(joined.size());
      in_word = false;
      continue;
    }
    if (cjk && is_cjk(cp)) {
      if (in_word) ends.push_back(joined.size());
      if (!joined.empty()) joined.push_back(' ');
      append_utf8(joined, cp);
      ends.push_back(joined.size());
      in_word = false;
      continue;
    }
    if (!in_word && !joined.empty()) joined.push_back(' ');
    append_utf8(joined, cp);
    in_word = true;
  }
  if (in_word) ends.push_back(joined.size());
}

}  // namespace

uint64_t exact_hash(std::string_view text) { return XXH3_64bits(text.data(), text.size()); }

std::vector<uint64_t> shingle_hashes(std::string_view text, int ngram, int cjk_ngram) {
  std::string joined;
  std::vector<size_t> ends;
  shingle_tokens(text, joined, ends);
  std::vector<uint64_t> out;
  if (ends.empty()) return out;
  const size_t n = static_cast<size_t>(is_cjk_text(text) ? cjk_ngram : ngram);
  if (ends.size() <= n) {
    out.push_back(XXH3_64bits(joined.data(), joined.size()));
    return out;
  }
  out.reserve(ends.size() - n + 1);
  for (size_t k = 0; k + n <= ends.size(); ++k) {
    const size_t begin = k == 0 ? 0 : ends[k - 1] + 1;  // skip the separating space
    out.push_back(XXH3_64bits(joined.data() + begin, ends[k + n - 1] - begin));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

double jaccard(const std::vector<uint64_t>& a, const std::vector<uint64_t>& b) {
  if (a.empty() && b.empty()) return 1.0;
  size_t i = 0, j = 0, common = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i] == b[j]) {
      ++common, ++i, ++j;
    } else if (a[i] < b[j]) {
      ++i;
    } else {
      ++j;
    }
  }
  return static_cast<double>(common) / static_cast<double>(a.size() + b.size() - common);
}

MinHasher::MinHasher(MinHashParams params) : params_(params) {
  uint64_t state = params.seed ^ 0x6d696e6861736831ULL;  // "minhash1"
  const int n = params.bands * params.rows;
  for (int i = 0; i < n; ++i) {
    mul_.push_back(splitmix(state) | 1);
    add_.push_back(splitmix(state));
  }
}

std::vector<uint32_t> MinHasher::signature(std::string_view text) const {
  const auto shingles = shingle_hashes(text, params_.ngram, params_.cjk_ngram);
  std::vector<uint32_t> sig;
  if (shingles.empty()) return sig;
  const size_t n = mul_.size();
  // Multiply-shift hashing of a 32-bit fold of each shingle hash: one
  // multiply-add per function, which vectorises.
  std::vector<uint64_t> mins(n, ~0ULL);
  for (uint64_t h : shingles) {
    const uint64_t x = (h ^ (h >> 32)) & 0xffffffffULL;
    for (size_t i = 0; i < n; ++i) {
      const uint64_t v = (mul_[i] * x + add_[i]) >> 32;
      mins[i] = v < mins[i] ? v : mins[i];
    }
  }
  sig.resize(n);
  for (size_t i = 0; i < n; ++i) sig[i] = static_cast<uint32_t>(mins[i]);
  return sig;
}

std::vector<uint64_t> MinHasher::band_keys(std::string_view text) const {
  const auto sig = signature(text);
  std::vector<uint64_t> keys;
  if (sig.empty()) return keys;
  for (int b = 0; b < params_.bands; ++b) {
    keys.push_back(XXH3_64bits_withSeed(sig.data() + static_cast<size_t>(b) * params_.rows,
                                        sizeof(uint32_t) * params_.rows, static_cast<uint64_t>(b)));
  }
  return keys;
}

int owner_rank(const BandEntry& entry, int world) {
  uint64_t h = entry.key ^ (static_cast<uint64_t>(entry.band) * 0x9e3779b97f4a7c15ULL);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return static_cast<int>(h % static_cast<uint64_t>(world));
}

std::vector<DuplicateEdge> edges_from_entries(std::vector<BandEntry>& entries) {
  std::sort(entries.begin(), entries.end(), [](const BandEntry& a, const BandEntry& b) {
    return std::tie(a.band, a.key, a.doc) < std::tie(b.band, b.key, b.doc);
  });
  std::vector<DuplicateEdge> edges;
  size_t i = 0;
  while (i < entries.size()) {
    size_t j = i + 1;
    while (j < entries.size() && entries[j].band == entries[i].band && entries[j].key == entries[i].key) {
      if (entries[j].doc != entries[j - 1].doc)
        edges.push_back({entries[i].doc, entries[j].doc, entries[i].band == kExactBand ? 1u : 0u});
      ++j;
    }
    i = j;
  }
  return edges;
}

std::unordered_map<uint64_t, DuplicateOf> resolve_duplicates(const std::vector<DuplicateEdge>& edges) {
  std::unordered_map<uint64_t, uint64_t> parent;
  auto find = [&](uint64_t x) {
    auto it = parent.find(x);
    if (it == parent.end()) {
      parent.emplace(x, x);
      return x;
    }
    uint64_t root = x;
    while (parent[root] != root) root = parent[root];
    while (parent[x] != root) {  // path compression
      const uint64_t next = parent[x];
      parent[x] = root;
      x = next;
    }
    return root;
  };
  for (const auto& e : edges) {
    const uint64_t a = find(e.first), b = find(e.doc);
    if (a == b) continue;
    // The smaller document number becomes the root: the root is the cluster's minimum.
    if (a < b)
      parent[b] = a;
    else
      parent[a] = b;
  }
  std::unordered_map<uint64_t, DuplicateOf> removed;
  for (const auto& [doc, unused] : parent) {
    (void)unused;
    const uint64_t root = find(doc);
    if (root != doc) removed[doc] = DuplicateOf{root, false};
  }
  for (const auto& e : edges)
    if (e.exact) {
      auto it = removed.find(e.doc);
      if (it != removed.end()) it->second.exact = true;
    }
  return removed;
}

}  // namespace moetrain::data::clean
