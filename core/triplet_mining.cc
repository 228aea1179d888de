#include "core/triplet_mining.h"

namespace dptrain {

void mine_triplets(const std::vector<double>& dist, const int32_t* labels, int64_t n,
                   TripletLossParam::Mining mining, double margin, MinedTriplets* out) {
  MinedTriplets& m = *out;
  m.triplets.clear();
  m.candidates = m.active = 0;
  auto d = [&](int64_t i, int64_t j) { return dist[static_cast<size_t>(i * n + j)]; };
  auto add = [&](int64_t a, int64_t p, int64_t q, bool keep_inactive) {
    const double term = d(a, p) - d(a, q) + margin;
    ++m.candidates;
    if (term > 0) ++m.active;
    if (term > 0 || keep_inactive) m.triplets.push_back({a, p, q, term});
  };
  for (int64_t a = 0; a < n; ++a) {
    switch (mining) {
      case TripletLossParam::BATCH_ALL:
        for (int64_t p = 0; p < n; ++p) {
          if (p == a || labels[p] != labels[a]) continue;
          for (int64_t q = 0; q < n; ++q) {
            if (labels[q] != labels[a]) add(a, p, q, false);
          }
        }
        break;
      case TripletLossParam::BATCH_HARD: {
        int64_t hardest_p = -1, hardest_n = -1;
        for (int64_t j = 0; j < n; ++j) {
          if (j == a) continue;
          if (labels[j] == labels[a]) {
            if (hardest_p < 0 || d(a, j) > d(a, hardest_p)) hardest_p = j;
          } else if (hardest_n < 0 || d(a, j) < d(a, hardest_n)) {
            hardest_n = j;
          }
        }
        if (hardest_p >= 0 && hardest_n >= 0) add(a, hardest_p, hardest_n, true);
        break;
      }
      case TripletLossParam::SEMI_HARD:
        for (int64_t p = 0; p < n; ++p) {
          if (p == a || labels[p] != labels[a]) continue;
          // The nearest negative farther than the positive; failing that,
          // the farthest negative.
          int64_t semi = -1, farthest = -1;
          for (int64_t q = 0; q < n; ++q) {
            if (labels[q] == labels[a]) continue;
            if (d(a, q) > d(a, p) && (semi < 0 || d(a, q) < d(a, semi))) semi = q;
            if (farthest < 0 || d(a, q) > d(a, farthest)) farthest = q;
          }
          if (farthest >= 0) add(a, p, semi >= 0 ? semi : farthest, true);
        }
        break;
      default:
        break;
    }
  }
  m.normalizer = mining == TripletLossParam::BATCH_ALL ? m.active : m.candidates;
}

}  // namespace dptrain
