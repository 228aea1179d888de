// Optimizers (SGD, AdamW) and global-norm gradient clipping, with PyTorch's
// semantics so that hyperparameters carry over from PyTorch recipes.
//
// All parameters of a net live in one flat float buffer and all gradients
// in another of the same length. Updates are elementwise, so any layout
// works, and an entry whose param, grad and state are all zero (the padding
// of blocked oneDNN layouts) stays exactly 0.0f. The training loop calls,
// once per step and identically on every rank:
//   clip_grad_norm(grads, n, spec.clip_grad_norm());
//   optimizer->step(params, grads, scheduler.lr(step));
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/dptrain.pb.h"

namespace dptrain {

// Updates `size` params in place from `size` grads. Owns its state
// (momentum, moments), allocated once in the constructor; step() allocates
// nothing and runs on the OpenMP threads. Results do not depend on the
// thread count.
class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // SGD or AdamW from spec.type(). Throws UserError for a hyperparameter
  // out of range (negative momentum or decay, betas outside [0, 1),
  // adam_eps <= 0, nesterov without momentum).
  static std::unique_ptr<Optimizer> create(const SolverSpec& spec, size_t size);

  // One update with learning rate lr. The optimizer counts its steps
  // itself; the first call is step 1 (AdamW's bias correction).
  virtual void step(float* params, const float* grads, float lr) = 0;

  // The state buffers by name, each `size` floats, for checkpoints: the
  // caller reads or overwrites the contents but never resizes them. SGD:
  // "momentum_buffer" (none when momentum is 0); AdamW: "exp_avg",
  // "exp_avg_sq". Restoring these and steps_taken() resumes bitwise.
  virtual std::vector<std::pair<std::string, std::vector<float>*>> state() = 0;
  virtual int64_t steps_taken() const = 0;
  virtual void set_steps_taken(int64_t steps) = 0;
};

// SGD, as torch.optim.SGD with dampening 0:
//   g = grad + weight_decay * p
//   buf = momentum * buf + g      (buf starts at 0, so step 1 gives buf = g,
//                                  exactly PyTorch's buf = clone(g))
//   d = nesterov ? g + momentum * buf : buf
//   p -= lr * d
// AdamW, as torch.optim.AdamW (amsgrad off), t = steps taken including this:
//   p *= 1 - lr * weight_decay
//   m = beta1 * m + (1 - beta1) * grad
//   v = beta2 * v + (1 - beta2) * grad^2
//   p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

// Global-norm clipping, as torch.nn.utils.clip_grad_norm_: returns the L2
// norm of the `size` grads before clipping; if max_norm > 0 and
// max_norm / (norm + 1e-6) < 1, scales the grads by that factor. The norm is
// bitwise the same for any OpenMP thread count and buffer alignment (fixed
// 4096-float chunks summed in double, chunk sums added in order). A
// non-finite norm is returned as is and the grads are left untouched: the
// caller decides what to do with a step that diverged.
float clip_grad_norm(float* grads, size_t size, float max_norm);

}  // namespace dptrain
