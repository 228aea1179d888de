// The process-wide oneDNN CPU engine and stream. Every layer executes on
// the one in-order stream, so primitives run one after another.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

namespace dptrain {

dnnl::engine& cpu_engine();
dnnl::stream& cpu_stream();

}  // namespace dptrain
