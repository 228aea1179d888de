// Counter-based randomness: every random choice is a pure function of
// (seed, stream, a, b, c), so runs are bitwise repeatable and any draw can be
// recomputed without replaying earlier ones (what resume needs).
#pragma once

#include <cmath>
#include <cstdint>

namespace dptrain {

// Streams keep independent uses of one seed apart.
enum class RandomStream : uint64_t {
  kInit = 1,
  kShuffle = 2,
  kAugment = 3,
  kDropout = 4,
  kSynthetic = 5,
  kValidation = 6,
  kBalanced = 7,
};

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline uint64_t derive_seed(uint64_t seed, RandomStream stream, uint64_t a = 0, uint64_t b = 0,
                            uint64_t c = 0) {
  uint64_t h = splitmix64(seed ^ splitmix64(static_cast<uint64_t>(stream)));
  h = splitmix64(h ^ a);
  h = splitmix64(h ^ (b + 0x632be59bd9b4e019ULL));
  return splitmix64(h ^ (c + 0x85157af5ULL));
}

// A small, fast generator (splitmix64 sequence) with distributions defined
// here rather than by the standard library, whose distributions differ
// between implementations.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  uint64_t next_u64() {
    state_ += 0x9e3779b97f4a7c15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 24 random bits.
  float uniform() { return static_cast<float>(next_u64() >> 40) * 0x1.0p-24f; }
  // Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; the tiny
  // bias for huge n does not matter here).
  uint64_t below(uint64_t n) {
    __extension__ using u128 = unsigned __int128;
    return static_cast<uint64_t>((static_cast<u128>(next_u64()) * n) >> 64);
  }
  // Standard normal by Box-Muller.
  float normal() {
    double u1 = (static_cast<double>(next_u64() >> 11) + 1.0) * 0x1.0p-53;
    double u2 = static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
  }

 private:
  uint64_t state_;
};

}  // namespace dptrain
