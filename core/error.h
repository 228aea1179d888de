// Errors a user can cause (bad config, missing or damaged file, bad flag)
// are thrown as UserError carrying one line that says what and where; the
// binaries print it and exit non-zero. Programming errors are asserted.
#pragma once

#include <stdexcept>
#include <string>

namespace dptrain {

class UserError : public std::runtime_error {
 public:
  explicit UserError(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace dptrain
