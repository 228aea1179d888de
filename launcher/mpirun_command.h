// What one attempt of a run executes: the mpirun command line around the
// worker, and the environment the launcher adds for it (the worker
// contract: DPTRAIN_CONTROL, DPTRAIN_CONTROL_TOKEN, DPTRAIN_JOB_ID,
// DPTRAIN_CONTROL_TIMEOUT, DPTRAIN_ATTEMPT). Every DPTRAIN_* variable of
// the job's environment and OMP_NUM_THREADS, if set, are forwarded with
// `-x NAME` so that ranks on other hosts see them too. Also where the
// control channel listens: loopback unless the hostfile names another
// host or --listen says otherwise.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/dptrain.pb.h"

namespace dptrain::launcher {

using EnvironmentList = std::vector<std::pair<std::string, std::string>>;

struct AttemptSettings {
  std::string control;  // HOST:PORT of the control server
  std::string token;
  std::string job_id;
  double control_timeout_s = 60;
  int attempt = 1;  // 1-based start number within the run folder
};

// The variables the launcher sets for an attempt (OMPI_ALLOW_RUN_AS_ROOT*
// too when running as root, since mpirun refuses root otherwise).
EnvironmentList attempt_environment(const AttemptSettings& settings, bool as_root);

// mpirun's arguments (after the program name):
//   -np N --bind-to none [--oversubscribe] [--hostfile H] -x NAME...
//   MPIRUN_ARGS... WORKER train CONFIG --run-dir DIR --resume [--set S]...
// --oversubscribe when N exceeds `cores` and no hostfile says where the
// ranks go. `inherited` is the launcher's environment ("NAME=VALUE"):
// its DPTRAIN_* variables (except the launcher's own DPTRAIN_LAUNCH_*) and
// OMP_NUM_THREADS are forwarded along with those of `added`.
std::vector<std::string> mpirun_args(const LaunchSpec& spec, const std::string& worker,
                                     const EnvironmentList& added,
                                     const std::vector<std::string>& inherited, unsigned cores);

// True when every host the hostfile names is this machine's loopback
// (localhost, 127.0.0.1, ::1). Throws UserError if it cannot be read.
bool hostfile_is_local(const std::string& path);

struct ListenAddress {
  std::string bind;  // what the server binds to
  unsigned short port = 0;
  std::string advertise;  // the host the workers are told to connect to
};
// From --listen ADDR[:PORT] if given, else loopback, or every interface
// (advertised under this host's name) when the hostfile names other
// hosts. Throws UserError for an ADDR that is not an IP address.
ListenAddress listen_address(const LaunchSpec& spec);

// "a b 'c d'": a command line as a shell would need it, for the logs.
std::string shell_quote(const std::vector<std::string>& words);

}  // namespace dptrain::launcher
