// Online triplet mining (dptrain.proto's TripletLossParam): which triplets
// (anchor, positive, negative) of a batch the loss is taken over, from the
// squared distances between its embeddings and their labels. The same
// rules whatever the batch is: the TripletLoss layer mines the global batch
// of a step (every rank the same), an evaluation batch on its own.
#pragma once

#include <cstdint>
#include <vector>

#include "core/dptrain.pb.h"

namespace dptrain {

struct Triplet {
  int64_t anchor, positive, negative;
  double term;  // d(a,p) - d(a,n) + margin; active if > 0
};

struct MinedTriplets {
  // BATCH_ALL: the active triplets only (the others add nothing), in
  // (anchor, positive, negative) order. BATCH_HARD: one per anchor with a
  // positive and a negative. SEMI_HARD: one per such anchor-positive pair.
  std::vector<Triplet> triplets;
  int64_t candidates = 0;  // triplets (BATCH_ALL), anchors or pairs considered
  int64_t active = 0;      // of those, with a positive term
  // The loss is the sum of the active terms divided by this: the active
  // triplets (BATCH_ALL), the anchors (BATCH_HARD) or the pairs (SEMI_HARD).
  int64_t normalizer = 0;
};

// dist: n x n squared distances, row-major. Ties in the hardest or
// semi-hard choice go to the lowest index. Fills *out (its storage reused).
void mine_triplets(const std::vector<double>& dist, const int32_t* labels, int64_t n,
                   TripletLossParam::Mining mining, double margin, MinedTriplets* out);

}  // namespace dptrain
