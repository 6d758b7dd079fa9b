// PortableRng: the random numbers behind every data decision (train/valid
// split, sample order, span corruption). SplitMix64 plus our own bounded
// uniform and shuffle, because std::uniform_int_distribution and std::shuffle
// give different results on different standard libraries, and a data position
// in a checkpoint must mean the same samples wherever the run resumes.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

namespace moetrain::data {

// The SplitMix64 output function: a bijective 64-bit mixer.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// One seed from several parts, e.g. (seed, epoch, sample). Order matters, and
// (a, b) and (a ^ b) differ, since each part is mixed into the running hash.
inline uint64_t combine_seeds(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x6a09e667f3bcc909ULL;
  for (uint64_t p : parts) h = mix64(h ^ mix64(p));
  return h;
}

class PortableRng {
 public:
  explicit PortableRng(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // Uniform in [0, n), n > 0, without modulo bias: values below 2^64 mod n are
  // rejected so every residue is equally likely.
  uint64_t uniform(uint64_t n) {
    const uint64_t threshold = (0 - n) % n;
    while (true) {
      uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }

  // Uniform in [0, 1) with 53 random bits.
  double uniform_double() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  // Fisher-Yates.
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) {
      size_t j = static_cast<size_t>(uniform(i));
      std::swap(v[i - 1], v[j]);
    }
  }

 private:
  uint64_t state_;
};

}  // namespace moetrain::data
