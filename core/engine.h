// The process-wide oneDNN CPU engine and stream. Every layer executes on
// the one in-order stream, so primitives run one after another.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <string>

namespace dptrain {

dnnl::engine& cpu_engine();
dnnl::stream& cpu_stream();

// Whether oneDNN runs AVX-512 kernels here (its ISA query, which honours
// ONEDNN_MAX_CPU_ISA).
bool has_avx512_core();
// Whether oneDNN runs bf16 kernels natively here (AVX512-BF16 or AMX).
bool has_bf16();

// For the record of where a run ran: the ISA oneDNN dispatches to
// ("avx512_core_amx", "avx2", ...), oneDNN's version ("2.6.0"), and the
// CPU's model name from /proc/cpuinfo ("" if it has none).
std::string effective_isa_name();
std::string onednn_version();
std::string cpu_model_name();

}  // namespace dptrain
