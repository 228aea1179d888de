// The process-wide oneDNN CPU engine and stream. Every layer executes on
// the one in-order stream, so primitives run one after another.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

namespace dptrain {

dnnl::engine& cpu_engine();
dnnl::stream& cpu_stream();

// Whether oneDNN runs AVX-512 kernels here (its ISA query, which honours
// ONEDNN_MAX_CPU_ISA).
bool has_avx512_core();

}  // namespace dptrain
