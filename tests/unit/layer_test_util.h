// Test harness for layers: a small net around the layers under test,
//
//   data -> pre (1x1 Convolution, identity weights, no bias)
//        -> layers under test -> head (InnerProduct) -> SoftmaxCrossEntropy,
//
// so that the layers' bottom needs a gradient (pre has parameters) and that
// gradient equals d loss / d data (pre is the identity). Gradients are
// checked against central finite differences of the loss, for every
// parameter tensor (perturbed through the plain export) and the input.
// Naive NCHW reference kernels for forward checks live here too.
#pragma once

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/engine.h"
#include "core/net.h"
#include "core/primitive.h"
#include "core/random.h"

namespace dptrain::layer_test {

using dnnl::memory;

inline NetSpec parse_net(const std::string& text) {
  NetSpec spec;
  if (!google::protobuf::TextFormat::ParseFromString(text, &spec)) {
    throw std::runtime_error("test net does not parse:\n" + text);
  }
  return spec;
}

inline int64_t volume(const memory::dims& dims) {
  int64_t v = 1;
  for (auto d : dims) v *= d;
  return v;
}

inline memory::desc plain_desc(const memory::dims& dims) {
  memory::dims strides(dims.size(), 1);
  for (size_t i = dims.size() - 1; i-- > 0;) strides[i] = strides[i + 1] * dims[i + 1];
  return memory::desc(dims, memory::data_type::f32, strides);
}

// The tensor in row-major order of its logical dims, whatever its layout.
inline std::vector<float> to_plain(const memory& m) {
  const memory::dims dims = m.get_desc().dims();
  std::vector<float> out(static_cast<size_t>(volume(dims)));
  memory plain(plain_desc(dims), cpu_engine(), out.data());
  make_reorder(m, plain).run();
  cpu_stream().wait();
  return out;
}

// `values` (row-major NCHW) as a channels-last tensor of `type`.
inline memory channels_last(const std::vector<float>& values, const memory::dims& dims,
                            memory::data_type type) {
  std::vector<float> copy = values;
  memory plain({dims, memory::data_type::f32, memory::format_tag::nchw}, cpu_engine(), copy.data());
  memory out({dims, type, memory::format_tag::nhwc}, cpu_engine());
  make_reorder(plain, out).run();
  cpu_stream().wait();
  return out;
}

// n distinct values spread over [-1, 1], shuffled, none closer than about
// 1/n to each other or to zero: no max-pooling ties and no ReLU kinks for
// small perturbations.
inline std::vector<float> distinct_values(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  const double step = 2.0 / static_cast<double>(n);
  for (size_t i = 0; i < n; ++i) {
    v[i] = static_cast<float>((static_cast<double>(i) + 0.5) * step - 1.0);
  }
  Rng rng(seed);
  for (size_t i = n; i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
  return v;
}

inline std::vector<float> param_grad(const Net& net, const std::string& name) {
  for (const auto& p : net.params().params()) {
    if (p->name != name) continue;
    std::vector<float> out(p->plain_desc.get_size() / sizeof(float));
    memory plain(p->plain_desc, cpu_engine(), out.data());
    make_reorder(p->grad, plain).run();
    cpu_stream().wait();
    return out;
  }
  throw std::runtime_error("no parameter " + name);
}

struct HarnessOptions {
  int classes = 3;
  uint64_t seed = 11;
  std::string loss = "";  // fields inside the loss layer, e.g. "loss { ... }"
  ReplicaReducer* reducer = nullptr;
  bool pre = true;  // false: the layers under test read "data" (no input gradient)
  // The loss and what comes between head and loss: head has `outputs`
  // (0: classes) outputs; labels are drawn from [0, classes).
  std::string loss_type = "SoftmaxCrossEntropy";
  int outputs = 0;
  std::string after_head = "";
};

class Harness {
 public:
  // `layers`: text of the layers under test; the first reads "pre" by
  // default. input: {N, C, H, W}.
  Harness(const std::string& layers, const memory::dims& input, HarnessOptions opt = {})
      : input_dims_(input) {
    const std::string pre = "layer { name: 'pre' type: 'Convolution' convolution { num_output: " +
                            std::to_string(input[1]) + " kernel_size: 1 bias: false } }\n";
    const std::string text =
        (opt.pre ? pre : "") + layers +
        "\nlayer { name: 'head' type: 'InnerProduct' inner_product { num_output: " +
        std::to_string(opt.outputs > 0 ? opt.outputs : opt.classes) + " } }\n" + opt.after_head +
        "\nlayer { name: 'loss' type: '" + opt.loss_type + "' " + opt.loss + " }\n";
    spec_ = parse_net(text);
    seed_ = opt.seed;
    // Blobs keep their bytes so that tests can read any of them after a
    // step (values after a forward; see Net::BlobMemory for what a backward
    // overwrites); the gradient checks run on a twin that reuses them.
    net_ = std::make_unique<Net>(spec_, input, opt.seed, opt.reducer, Net::BlobMemory::kKeepAll);
    x_ = distinct_values(static_cast<size_t>(volume(input)), opt.seed + 1);
    Rng rng(opt.seed + 2);
    labels_.resize(static_cast<size_t>(input[0]));
    for (auto& l : labels_) l = static_cast<int32_t>(rng.below(static_cast<uint64_t>(opt.classes)));
    net_->set_input(x_.data(), labels_.data(), input[0]);
    if (!opt.pre) return;
    const int64_t c = input[1];
    std::vector<float> eye(static_cast<size_t>(c * c), 0.f);
    for (int64_t i = 0; i < c; ++i) eye[static_cast<size_t>(i * c + i)] = 1.f;
    set_weight("pre.weight", eye);
  }

  Net& net() { return *net_; }
  std::vector<float>& input() { return x_; }
  const std::vector<int32_t>& labels() const { return labels_; }
  void set_labels(const std::vector<int32_t>& labels) {
    labels_ = labels;
    net_->set_input(x_.data(), labels_.data(), input_dims_[0]);
  }
  const memory::dims& input_dims() const { return input_dims_; }

  double loss(bool training = true) {
    net_->forward(training);
    return net_->loss_layer().loss();
  }
  void forward_backward() {
    net_->forward(true);
    net_->backward();
  }
  std::vector<float> data(const std::string& blob) const { return to_plain(net_->blob(blob).data); }
  std::vector<float> diff(const std::string& blob) const { return to_plain(net_->blob(blob).diff); }
  memory::dims dims(const std::string& blob) const { return net_->blob(blob).dims(); }

  // Parameters and buffers by name, in plain layouts.
  std::map<std::string, std::vector<float>> weights() const {
    std::map<std::string, std::vector<float>> out;
    const WeightsFile file = net_->params().export_weights();
    for (const NamedTensor& t : file.tensor()) {
      std::vector<float> v(t.data().size() / sizeof(float));
      std::memcpy(v.data(), t.data().data(), t.data().size());
      out[t.name()] = v;
    }
    return out;
  }
  void set_weight(const std::string& name, const std::vector<float>& values) {
    WeightsFile file = net_->params().export_weights();
    bool found = false;
    for (NamedTensor& t : *file.mutable_tensor()) {
      if (t.name() != name) continue;
      if (t.data().size() != values.size() * sizeof(float))
        throw std::runtime_error("size: " + name);
      t.set_data(values.data(), values.size() * sizeof(float));
      found = true;
    }
    if (!found) throw std::runtime_error("no tensor " + name);
    net_->params().import_weights(file, "test");
  }
  // Gradient of a trainable parameter, plain layout.
  std::vector<float> grad(const std::string& name) const { return param_grad(*net_, name); }
  const Layer& layer(const std::string& name) const {
    for (const auto& l : net_->layers()) {
      if (l->name() == name) return *l;
    }
    throw std::runtime_error("no layer " + name);
  }

  // A second net like this one (no replica reducer) with the same
  // parameters, input and net state, built for and run by the threads
  // allowed when it is called.
  std::unique_ptr<Net> twin() {
    auto twin = std::make_unique<Net>(spec_, input_dims_, seed_);
    twin->params().import_weights(net_->params().export_weights(), "twin");
    twin->set_input(x_.data(), labels_.data(), net_->state().valid);
    twin->state().step = net_->state().step;
    twin->state().sample_offset = net_->state().sample_offset;
    twin->state().loss_scale = net_->state().loss_scale;
    return twin;
  }

 private:
  memory::dims input_dims_;
  NetSpec spec_;
  uint64_t seed_ = 0;
  std::unique_ptr<Net> net_;
  std::vector<float> x_;
  std::vector<int32_t> labels_;
};

struct GradCheck {
  double eps = 1e-2;        // perturbation
  double rtol = 3e-2;       // relative to the numeric value
  double atol = 1e-2;       // relative to the largest numeric value of the tensor
  size_t max_entries = 40;  // checked per tensor (evenly spread)
  bool input = true;        // also d loss / d data
};

inline std::vector<size_t> spread(size_t n, size_t most) {
  std::vector<size_t> out;
  if (n <= most) {
    for (size_t i = 0; i < n; ++i) out.push_back(i);
  } else {
    for (size_t k = 0; k < most; ++k) {
      out.push_back(k * n / most + (k * 7) % std::max<size_t>(n / most, 1));
    }
  }
  return out;
}

// Compares analytic[entries[k]] with numeric(entries[k], eps) for every k.
// An entry that differs is measured again with a 4x smaller step before it
// counts as a failure: a kink (ReLU at 0, a max changing places) within
// reach of the larger step spoils that one difference, not the smaller one.
// The tensor must carry a signal.
template <class Numeric>
void expect_close_gradients(const std::string& what, const std::vector<size_t>& entries,
                            const std::vector<float>& analytic, Numeric&& numeric,
                            const GradCheck& opt) {
  std::vector<double> values;
  double scale = 0;
  for (size_t j : entries) {
    values.push_back(numeric(j, opt.eps));
    scale = std::max(scale, std::abs(values.back()));
  }
  EXPECT_GT(scale, 1e-5) << what << ": the gradient is zero everywhere checked";
  auto close = [&](double a, double n, double eps) {
    // Rounding of the float forward, about 1e-7 of the loss, over 2 eps.
    const double noise = 1e-7 / eps;
    return std::abs(a - n) <= opt.atol * scale + opt.rtol * std::abs(n) + noise;
  };
  int failures = 0;
  for (size_t k = 0; k < entries.size(); ++k) {
    const double a = analytic[entries[k]];
    double n = values[k];
    if (close(a, n, opt.eps)) continue;
    n = numeric(entries[k], opt.eps / 4);
    if (close(a, n, opt.eps / 4)) continue;
    if (++failures <= 5) {
      ADD_FAILURE() << what << "[" << entries[k] << "]: analytic " << a << " numeric " << values[k]
                    << " (step " << opt.eps << "), " << n << " (step " << opt.eps / 4
                    << "); largest " << scale;
    }
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << entries.size() << " differ";
}

// Backward against central differences of the loss (training forward) for
// every trainable parameter and, through the identity `pre`, the input.
inline void expect_gradients_match(Harness& h, const GradCheck& opt = {}) {
  // The differences take thousands of forwards of a tiny net, where waking
  // threads costs more than the work (on a busy machine, a scheduler tick
  // per primitive): they run on a one-thread twin of the net. Its blobs
  // share bytes as in training, so the backward checked is the one that
  // trains.
  struct OneThread {
    int saved = omp_get_max_threads();
    OneThread() { omp_set_num_threads(1); }
    ~OneThread() { omp_set_num_threads(saved); }
  } one_thread;
  const std::unique_ptr<Net> twin = h.twin();
  twin->forward(true);
  twin->backward();
  // The input's gradient is the first layer's, which backward writes last.
  const std::vector<float> dx = opt.input ? to_plain(twin->blob("pre").diff) : std::vector<float>();
  std::vector<std::vector<float>> analytic;
  for (const auto& p : twin->params().params()) analytic.push_back(param_grad(*twin, p->name));
  auto loss = [&] {
    twin->forward(true);
    return static_cast<double>(twin->loss_layer().loss());
  };

  WeightsFile file = twin->params().export_weights();
  const size_t trainable = twin->params().params().size();
  for (size_t t = 0; t < trainable; ++t) {
    NamedTensor& tensor = *file.mutable_tensor(static_cast<int>(t));
    std::string& bytes = *tensor.mutable_data();
    auto numeric = [&](size_t j, double eps) {
      float v;
      std::memcpy(&v, bytes.data() + j * sizeof(float), sizeof v);
      double l[2], at[2];
      for (int side = 0; side < 2; ++side) {
        const auto moved = static_cast<float>(v + (side ? -eps : eps));
        at[side] = moved;
        std::memcpy(bytes.data() + j * sizeof(float), &moved, sizeof moved);
        twin->params().import_weights(file, "test");
        l[side] = loss();
      }
      std::memcpy(bytes.data() + j * sizeof(float), &v, sizeof v);
      return (l[0] - l[1]) / (at[0] - at[1]);
    };
    expect_close_gradients(tensor.name(), spread(bytes.size() / sizeof(float), opt.max_entries),
                           analytic[t], numeric, opt);
    twin->params().import_weights(file, "test");
  }
  if (!opt.input) return;
  std::vector<float>& x = h.input();
  auto numeric = [&](size_t j, double eps) {
    const float v = x[j];
    const auto up = static_cast<float>(v + eps), down = static_cast<float>(v - eps);
    x[j] = up;
    const double plus = loss();
    x[j] = down;
    const double minus = loss();
    x[j] = v;
    return (plus - minus) / (static_cast<double>(up) - down);
  };
  expect_close_gradients("d loss / d data", spread(x.size(), opt.max_entries * 2), dx, numeric,
                         opt);
}

// Expects two tensors equal within a tolerance relative to the larger one.
inline void expect_near_all(const std::vector<float>& got, const std::vector<float>& want,
                            double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1e-6;
  for (float w : want) scale = std::max(scale, static_cast<double>(std::abs(w)));
  int failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::abs(static_cast<double>(got[i]) - want[i]) > tol * scale) {
      if (++failures <= 5) {
        ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << " want " << want[i];
      }
    }
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << got.size() << " differ";
}

// ---- Naive references on NCHW -----------------------------------------

struct Shape {
  int64_t n = 1, c = 1, h = 1, w = 1;
  int64_t size() const { return n * c * h * w; }
  size_t at(int64_t in, int64_t ic, int64_t ih, int64_t iw) const {
    return static_cast<size_t>(((in * c + ic) * h + ih) * w + iw);
  }
};

inline Shape shape_of(const memory::dims& d) {
  Shape s;
  s.n = d[0];
  s.c = d.size() > 1 ? d[1] : 1;
  s.h = d.size() > 2 ? d[2] : 1;
  s.w = d.size() > 3 ? d[3] : 1;
  return s;
}

struct ConvShape {
  int64_t oc, k, stride = 1, pad = 0, dilation = 1, group = 1;
};

// w: {oc, ic/group, k, k}; b empty for none.
inline std::vector<float> conv_ref(const std::vector<float>& x, const Shape& in,
                                   const std::vector<float>& w, const std::vector<float>& b,
                                   const ConvShape& p, Shape* out) {
  const int64_t span = (p.k - 1) * p.dilation + 1;
  *out = {in.n, p.oc, (in.h + 2 * p.pad - span) / p.stride + 1,
          (in.w + 2 * p.pad - span) / p.stride + 1};
  const int64_t icg = in.c / p.group, ocg = p.oc / p.group;
  std::vector<float> y(static_cast<size_t>(out->size()));
  for (int64_t n = 0; n < in.n; ++n) {
    for (int64_t o = 0; o < p.oc; ++o) {
      for (int64_t oy = 0; oy < out->h; ++oy) {
        for (int64_t ox = 0; ox < out->w; ++ox) {
          double acc = b.empty() ? 0.0 : b[static_cast<size_t>(o)];
          for (int64_t i = 0; i < icg; ++i) {
            const int64_t c = o / ocg * icg + i;
            for (int64_t ky = 0; ky < p.k; ++ky) {
              for (int64_t kx = 0; kx < p.k; ++kx) {
                const int64_t iy = oy * p.stride - p.pad + ky * p.dilation;
                const int64_t ix = ox * p.stride - p.pad + kx * p.dilation;
                if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
                acc += static_cast<double>(x[in.at(n, c, iy, ix)]) *
                       w[static_cast<size_t>(((o * icg + i) * p.k + ky) * p.k + kx)];
              }
            }
          }
          y[out->at(n, o, oy, ox)] = static_cast<float>(acc);
        }
      }
    }
  }
  return y;
}

enum class PoolKind { kMax, kAvgInclude, kAvgExclude };

inline std::vector<float> pool_ref(const std::vector<float>& x, const Shape& in, PoolKind kind,
                                   int64_t k, int64_t s, int64_t pad, Shape* out) {
  *out = {in.n, in.c, (in.h + 2 * pad - k) / s + 1, (in.w + 2 * pad - k) / s + 1};
  std::vector<float> y(static_cast<size_t>(out->size()));
  for (int64_t n = 0; n < in.n; ++n) {
    for (int64_t c = 0; c < in.c; ++c) {
      for (int64_t oy = 0; oy < out->h; ++oy) {
        for (int64_t ox = 0; ox < out->w; ++ox) {
          double acc = kind == PoolKind::kMax ? -1e30 : 0.0;
          int64_t count = 0;
          for (int64_t ky = 0; ky < k; ++ky) {
            for (int64_t kx = 0; kx < k; ++kx) {
              const int64_t iy = oy * s - pad + ky, ix = ox * s - pad + kx;
              if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
              const double v = x[in.at(n, c, iy, ix)];
              acc = kind == PoolKind::kMax ? std::max(acc, v) : acc + v;
              ++count;
            }
          }
          if (kind == PoolKind::kAvgInclude) acc /= static_cast<double>(k * k);
          if (kind == PoolKind::kAvgExclude) acc /= static_cast<double>(count);
          y[out->at(n, c, oy, ox)] = static_cast<float>(acc);
        }
      }
    }
  }
  return y;
}

// x: {N, F} (any input flattened in C, H, W order); w: {O, F}.
inline std::vector<float> inner_product_ref(const std::vector<float>& x, int64_t n,
                                            const std::vector<float>& w,
                                            const std::vector<float>& b, int64_t outputs) {
  const int64_t f = static_cast<int64_t>(x.size()) / n;
  std::vector<float> y(static_cast<size_t>(n * outputs));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t o = 0; o < outputs; ++o) {
      double acc = b.empty() ? 0.0 : b[static_cast<size_t>(o)];
      for (int64_t j = 0; j < f; ++j) {
        acc += static_cast<double>(x[static_cast<size_t>(i * f + j)]) *
               w[static_cast<size_t>(o * f + j)];
      }
      y[static_cast<size_t>(i * outputs + o)] = static_cast<float>(acc);
    }
  }
  return y;
}

inline float activation_ref(const std::string& type, float alpha, float x) {
  const double v = x;
  if (type == "ReLU") return x > 0 ? x : 0.f;
  if (type == "LeakyReLU") return x > 0 ? x : alpha * x;
  if (type == "ELU") return x > 0 ? x : static_cast<float>(alpha * std::expm1(v));
  if (type == "Sigmoid") return static_cast<float>(1.0 / (1.0 + std::exp(-v)));
  if (type == "Tanh") return static_cast<float>(std::tanh(v));
  throw std::runtime_error("no reference for " + type);
}

inline std::vector<float> activation_ref(const std::string& type, float alpha,
                                         std::vector<float> x) {
  for (float& v : x) v = activation_ref(type, alpha, v);
  return x;
}

// Per-channel mean and biased variance over N, H, W.
inline void channel_stats(const std::vector<float>& x, const Shape& s, std::vector<double>* mean,
                          std::vector<double>* var) {
  mean->assign(static_cast<size_t>(s.c), 0.0);
  var->assign(static_cast<size_t>(s.c), 0.0);
  const double m = static_cast<double>(s.n * s.h * s.w);
  for (int64_t c = 0; c < s.c; ++c) {
    double sum = 0, sq = 0;
    for (int64_t n = 0; n < s.n; ++n) {
      for (int64_t i = 0; i < s.h * s.w; ++i) sum += x[s.at(n, c, 0, 0) + static_cast<size_t>(i)];
    }
    const double mu = sum / m;
    for (int64_t n = 0; n < s.n; ++n) {
      for (int64_t i = 0; i < s.h * s.w; ++i) {
        const double d = x[s.at(n, c, 0, 0) + static_cast<size_t>(i)] - mu;
        sq += d * d;
      }
    }
    (*mean)[static_cast<size_t>(c)] = mu;
    (*var)[static_cast<size_t>(c)] = sq / m;
  }
}

inline std::vector<float> batch_norm_ref(const std::vector<float>& x, const Shape& s,
                                         const std::vector<double>& mean,
                                         const std::vector<double>& var,
                                         const std::vector<float>& gamma,
                                         const std::vector<float>& beta, double eps, bool relu) {
  std::vector<float> y(x.size());
  for (int64_t n = 0; n < s.n; ++n) {
    for (int64_t c = 0; c < s.c; ++c) {
      const auto ci = static_cast<size_t>(c);
      const double inv = 1.0 / std::sqrt(var[ci] + eps);
      for (int64_t i = 0; i < s.h * s.w; ++i) {
        const size_t at = s.at(n, c, 0, 0) + static_cast<size_t>(i);
        double v = gamma[ci] * (x[at] - mean[ci]) * inv + beta[ci];
        if (relu) v = std::max(v, 0.0);
        y[at] = static_cast<float>(v);
      }
    }
  }
  return y;
}

// Mean softmax cross-entropy with label smoothing over all rows.
inline double softmax_cross_entropy_ref(const std::vector<float>& logits,
                                        const std::vector<int32_t>& labels, int classes,
                                        double smoothing) {
  double total = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    const float* row = logits.data() + i * static_cast<size_t>(classes);
    double z = 0;
    for (int c = 0; c < classes; ++c) z += std::exp(static_cast<double>(row[c]));
    const double log_z = std::log(z);
    for (int c = 0; c < classes; ++c) {
      const double target = smoothing / classes + (c == labels[i] ? 1.0 - smoothing : 0.0);
      total -= target * (row[c] - log_z);
    }
  }
  return total / static_cast<double>(labels.size());
}

}  // namespace dptrain::layer_test
