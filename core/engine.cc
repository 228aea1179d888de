#include "core/engine.h"

#include <fstream>

namespace dptrain {

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& cpu_stream() {
  static dnnl::stream stream(cpu_engine());
  return stream;
}

bool has_avx512_core() {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto avx512 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core);
  return (isa & avx512) == avx512;
}

bool has_bf16() {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto bf16 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
  return (isa & bf16) == bf16;
}

std::string effective_isa_name() {
  using dnnl::cpu_isa;
  // The most capable first: each ISA's bits include those below it.
  const std::pair<cpu_isa, const char*> names[] = {{cpu_isa::avx512_core_amx, "avx512_core_amx"},
                                                   {cpu_isa::avx512_core_bf16, "avx512_core_bf16"},
                                                   {cpu_isa::avx512_core_vnni, "avx512_core_vnni"},
                                                   {cpu_isa::avx512_core, "avx512_core"},
                                                   {cpu_isa::avx2_vnni, "avx2_vnni"},
                                                   {cpu_isa::avx2, "avx2"},
                                                   {cpu_isa::avx, "avx"},
                                                   {cpu_isa::sse41, "sse41"}};
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  for (const auto& [bits, name] : names) {
    if ((isa & static_cast<unsigned>(bits)) == static_cast<unsigned>(bits)) return name;
  }
  return "none";
}

std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) break;
    size_t start = line.find_first_not_of(" \t", colon + 1);
    return start == std::string::npos ? "" : line.substr(start);
  }
  return "";
}

}  // namespace dptrain
