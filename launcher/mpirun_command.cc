#include "launcher/mpirun_command.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/host_name.hpp>

#include "core/error.h"

namespace dptrain::launcher {
namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

bool forwarded(const std::string& name) {
  return (starts_with(name, "DPTRAIN_") && !starts_with(name, "DPTRAIN_LAUNCH_")) ||
         name == "OMP_NUM_THREADS";
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

}  // namespace

EnvironmentList attempt_environment(const AttemptSettings& settings, bool as_root) {
  EnvironmentList env = {
      {"DPTRAIN_CONTROL", settings.control},
      {"DPTRAIN_CONTROL_TOKEN", settings.token},
      {"DPTRAIN_JOB_ID", settings.job_id},
      {"DPTRAIN_CONTROL_TIMEOUT", seconds_text(settings.control_timeout_s)},
      {"DPTRAIN_ATTEMPT", std::to_string(settings.attempt)},
  };
  if (as_root) {
    env.emplace_back("OMPI_ALLOW_RUN_AS_ROOT", "1");
    env.emplace_back("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
  }
  return env;
}

std::vector<std::string> mpirun_args(const LaunchSpec& spec, const std::string& worker,
                                     const EnvironmentList& added,
                                     const std::vector<std::string>& inherited, unsigned cores) {
  std::vector<std::string> args = {"-np", std::to_string(spec.np()), "--bind-to", "none"};
  if (spec.hostfile().empty() && static_cast<unsigned>(spec.np()) > cores) {
    args.push_back("--oversubscribe");
  }
  if (!spec.hostfile().empty()) {
    args.push_back("--hostfile");
    args.push_back(spec.hostfile());
  }
  std::vector<std::string> names;
  for (const auto& [name, value] : added) names.push_back(name);
  for (const std::string& entry : inherited) names.push_back(entry.substr(0, entry.find('=')));
  std::vector<std::string> seen;
  for (const std::string& name : names) {
    if (!forwarded(name) || std::find(seen.begin(), seen.end(), name) != seen.end()) continue;
    seen.push_back(name);
    args.push_back("-x");
    args.push_back(name);
  }
  for (const std::string& a : spec.mpirun_arg()) args.push_back(a);
  args.insert(args.end(),
              {worker, "train", spec.config(), "--run-dir", spec.run_dir(), "--resume"});
  for (const std::string& s : spec.set()) {
    args.push_back("--set");
    args.push_back(s);
  }
  for (const std::string& a : spec.worker_arg()) args.push_back(a);
  return args;
}

bool hostfile_is_local(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UserError("cannot read hostfile " + path);
  std::string line;
  while (std::getline(in, line)) {
    line = line.substr(0, line.find('#'));
    std::istringstream words(line);
    std::string host;
    if (!(words >> host)) continue;
    if (host != "localhost" && host != "127.0.0.1" && host != "::1") return false;
  }
  return true;
}

ListenAddress listen_address(const LaunchSpec& spec) {
  ListenAddress out;
  if (spec.listen().empty()) {
    const bool local = spec.hostfile().empty() || hostfile_is_local(spec.hostfile());
    out.bind = local ? "127.0.0.1" : "0.0.0.0";
    out.advertise = local ? "127.0.0.1" : boost::asio::ip::host_name();
    return out;
  }
  std::string address = spec.listen();
  // One colon: IPv4 with a port. IPv6 literals carry several.
  if (std::count(address.begin(), address.end(), ':') == 1) {
    const std::string port = address.substr(address.find(':') + 1);
    address = address.substr(0, address.find(':'));
    char* end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p < 0 || p > 65535) {
      throw UserError("--listen " + spec.listen() + ": bad port '" + port + "'");
    }
    out.port = static_cast<unsigned short>(p);
  }
  boost::system::error_code ec;
  const auto ip = boost::asio::ip::make_address(address, ec);
  if (ec) throw UserError("--listen " + spec.listen() + ": '" + address + "' is not an IP address");
  out.bind = address;
  out.advertise = ip.is_unspecified() ? boost::asio::ip::host_name() : address;
  if (ip.is_v6() && !ip.is_unspecified()) out.advertise = "[" + address + "]";
  return out;
}

std::string shell_quote(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) {
    if (!out.empty()) out += ' ';
    const bool plain = !w.empty() && w.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789-_./=:,+@%[]") == std::string::npos;
    if (plain) {
      out += w;
      continue;
    }
    out += '\'';
    for (char c : w) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

}  // namespace dptrain::launcher
