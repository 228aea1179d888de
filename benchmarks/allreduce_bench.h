// dptrain-bench allreduce: the gradient reducer (dist/gradient_reducer,
// overlapped buckets at the default 1 MB) against one raw
// MPI_Allreduce of the same floats, from 4 KB to 256 MB: median time per
// reduction, and bus bandwidth (algorithm bandwidth x 2 (p - 1) / p, what
// a ring moves per rank). Run under mpirun; rank 0 writes the table.
#pragma once

#include <string>

#include "dist/communicator.h"

namespace dptrain::bench {

int allreduce(const Communicator& comm, double seconds, int64_t max_bytes, double bucket_mb,
              const std::string& out);

}  // namespace dptrain::bench
