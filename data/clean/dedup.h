// Deduplication: exact (a 64-bit hash of the normalised text) and near
// duplicates by MinHash with LSH banding, as in FineWeb: word 5-gram shingles
// of the lower-cased text without punctuation (character 5-grams for CJK
// text, which has no spaces), 14 bands of 8 rows. Two documents whose
// signatures agree on every row of some band are duplicates (a pair with
// shingle Jaccard similarity s collides with probability 1 - (1 - s^8)^14:
// 0.92 at s = 0.8, 0.004 at s = 0.3). Duplicate pairs are joined into
// clusters by union-find; each cluster keeps its member with the smallest
// document number (input order), so the choice does not depend on how work
// is split over ranks.
//
// Distributed use: each rank computes BandEntry records for its documents and
// sends each to owner_rank(); owners turn equal keys into edges
// (edges_from_entries); all edges are gathered on every rank, and
// resolve_duplicates gives every rank the same decisions as one process.
#pragma once

#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace moetrain::data::clean {

struct MinHashParams {
  int ngram = 5;      // words per shingle
  int cjk_ngram = 5;  // characters per shingle in CJK text
  int bands = 14;
  int rows = 8;
  uint64_t seed = 1;
};

// 64-bit hash of the whole text (exact duplicates).
uint64_t exact_hash(std::string_view text);

// Hashes of the shingles of `text` (sorted, unique). A text shorter than one
// shingle gives one shingle of all its tokens; an empty one gives none.
std::vector<uint64_t> shingle_hashes(std::string_view text, int ngram, int cjk_ngram);

// Jaccard similarity of two sorted, unique hash sets.
double jaccard(const std::vector<uint64_t>& a, const std::vector<uint64_t>& b);

class MinHasher {
 public:
  explicit MinHasher(MinHashParams params);
  const MinHashParams& params() const { return params_; }
  // bands * rows minimum hash values; empty when the text has no shingle.
  std::vector<uint32_t> signature(std::string_view text) const;
  // One key per band (band index mixed in); empty when the text has no shingle.
  std::vector<uint64_t> band_keys(std::string_view text) const;

 private:
  MinHashParams params_;
  std::vector<uint64_t> mul_, add_;
};

// One LSH bucket membership; band kExactBand holds the exact hash.
constexpr uint32_t kExactBand = 0xFFFFFFFFu;
struct BandEntry {
  uint64_t key;
  uint64_t doc;  // global document number (see pipeline: shard << 32 | line)
  uint32_t band;
};

struct DuplicateEdge {
  uint64_t first;  // the smallest document of the bucket
  uint64_t doc;    // another member
  uint32_t exact;  // 1 when the bucket is the exact hash
};

int owner_rank(const BandEntry& entry, int world);

// Sorts `entries` and returns, for every bucket with more than one member,
// an edge from its smallest document to each other member.
std::vector<DuplicateEdge> edges_from_entries(std::vector<BandEntry>& entries);

struct DuplicateOf {
  uint64_t kept;  // the member its cluster keeps
  bool exact;     // an exact copy of an earlier document
};

// Union-find over the edges: every document to remove, with its cluster's kept
// member. Documents in no edge are kept.
std::unordered_map<uint64_t, DuplicateOf> resolve_duplicates(const std::vector<DuplicateEdge>& edges);

}  // namespace moetrain::data::clean
