// precision BF16: the net runs its primitives on bf16 activations and bf16
// copies of f32 master weights, and its gradients stay f32. On a CPU
// without bf16 kernels every test here skips, saying so (the refusal at
// start is tested end to end, in tests/e2e/test_dptrain_cli.cc).
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/engine.h"
#include "core/net.h"
#include "core/optimizer.h"
#include "tests/unit/layer_test_util.h"

namespace dptrain {
namespace {

using dnnl::memory;
using layer_test::distinct_values;
using layer_test::parse_net;

// convbn_fmnist's layer stack on 28x28 images, with a residual Add after
// a BatchNorm (its normalization folded into the Add where channels-last), a
// Concat and a bias-less strided 1x1 convolution (whose weight gradient
// is a matmul where the convolutions run channels-last, as on AMX) so that
// every layer bf16 runs through appears.
const char* kNet = R"(
  layer { name: 'conv1' type: 'Convolution' convolution { num_output: 32 kernel_size: 3 pad: 1 bias: false } }
  layer { name: 'bn1' type: 'BatchNorm' }
  layer { name: 'relu1' type: 'ReLU' }
  layer { name: 'pool1' type: 'MaxPool' pooling { kernel_size: 2 } }
  layer { name: 'conv2' type: 'Convolution' convolution { num_output: 32 kernel_size: 3 pad: 1 bias: false } }
  layer { name: 'bn2' type: 'BatchNorm' }
  layer { name: 'sum' type: 'Add' bottom: 'bn2' bottom: 'pool1' }
  layer { name: 'relu2' type: 'ReLU' }
  layer { name: 'conv3' type: 'Convolution' bottom: 'relu2' convolution { num_output: 32 kernel_size: 1 } }
  layer { name: 'cat' type: 'Concat' bottom: 'relu2' bottom: 'conv3' }
  layer { name: 'down' type: 'Convolution' convolution { num_output: 32 kernel_size: 1 stride: 2 bias: false } }
  layer { name: 'pool2' type: 'AvgPool' pooling { kernel_size: 2 } }
  layer { name: 'fc1' type: 'InnerProduct' inner_product { num_output: 64 } }
  layer { name: 'relu3' type: 'ReLU' }
  layer { name: 'fc2' type: 'InnerProduct' inner_product { num_output: 10 } }
  layer { name: 'loss' type: 'SoftmaxCrossEntropy' }
)";

class Bf16Test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!has_bf16()) {
      GTEST_SKIP() << "no bf16 kernels on this CPU (oneDNN runs " << effective_isa_name() << ")";
    }
    spec_ = parse_net(kNet);
    x_ = distinct_values(static_cast<size_t>(kBatch * 28 * 28), 3);
    labels_.resize(kBatch);
    for (int i = 0; i < kBatch; ++i) labels_[static_cast<size_t>(i)] = (i * 7) % 10;
  }
  std::unique_ptr<Net> net(Precision precision) {
    auto n = std::make_unique<Net>(spec_, memory::dims{kBatch, 1, 28, 28}, 5, nullptr,
                                   Net::BlobMemory::kReuse, 1, precision);
    n->set_input(x_.data(), labels_.data(), kBatch);
    return n;
  }
  static constexpr int kBatch = 32;
  NetSpec spec_;
  std::vector<float> x_;
  std::vector<int32_t> labels_;
};

double cosine(const float* a, const float* b, size_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < n; ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

TEST_F(Bf16Test, EveryLayerRunsBf16KernelsAndNoReferenceOne) {
  auto n = net(BF16);
  for (const auto& layer : n->layers()) {
    EXPECT_EQ(layer->describe().find("ref"), std::string::npos)
        << layer->name() << ": " << layer->describe();
  }
  // Channels-last (AMX), the bias-less 1x1 layer's weight gradient is a
  // matmul; channel-blocked, its convolution's own kernel.
  for (const auto& layer : n->layers()) {
    if (layer->name() != "down") continue;
    const bool channels_last = layout_name(n->blob("down").desc()) == "nhwc";
    EXPECT_EQ(layer->describe().find("bwd_w matmul") != std::string::npos, channels_last)
        << layer->describe();
  }
  for (const auto& layer : n->layers()) {
    if (layer->name() != "sum") continue;
    const bool channels_last = layout_name(n->blob("bn2").desc()) == "nhwc";
    EXPECT_EQ(layer->describe().find("in one loop") != std::string::npos, channels_last)
        << layer->describe();
  }
  EXPECT_EQ(n->blob("conv1").desc().data_type(), memory::data_type::bf16);
  EXPECT_EQ(n->blob("fc2").desc().data_type(), memory::data_type::bf16);
  // The master weights and their gradients are f32.
  for (const auto& p : n->params().params()) {
    EXPECT_EQ(p->value.get_desc().data_type(), memory::data_type::f32) << p->name;
    EXPECT_EQ(p->grad.get_desc().data_type(), memory::data_type::f32) << p->name;
  }
}

TEST_F(Bf16Test, LossAndGradientsAgreeWithFp32ToBf16Precision) {
  auto a = net(FP32), b = net(BF16);
  b->params().import_weights(a->params().export_weights(), "fp32 twin");
  a->forward(true);
  b->forward(true);
  const float la = a->loss_layer().loss(), lb = b->loss_layer().loss();
  EXPECT_NEAR(lb, la, 0.02 * std::abs(la));
  a->backward();
  b->backward();
  const WeightsFile ga = [&] {
    std::swap_ranges(a->params().values(), a->params().values() + a->params().size(),
                     a->params().grads());
    return a->params().export_weights();
  }();
  const WeightsFile gb = [&] {
    std::swap_ranges(b->params().values(), b->params().values() + b->params().size(),
                     b->params().grads());
    return b->params().export_weights();
  }();
  for (int i = 0; i < ga.tensor_size(); ++i) {
    const std::string& da = ga.tensor(i).data();
    const std::string& db = gb.tensor(i).data();
    if (ga.tensor(i).name().find("running") != std::string::npos) continue;
    const size_t n = da.size() / sizeof(float);
    EXPECT_GT(cosine(reinterpret_cast<const float*>(da.data()),
                     reinterpret_cast<const float*>(db.data()), n),
              0.99)
        << ga.tensor(i).name();
  }
}

TEST_F(Bf16Test, FitsABatchAsFp32Does) {
  // Fifty SGD steps on one batch take both from the untrained loss
  // (about 4.3) to well below it. The rate is one at which the loss falls
  // smoothly: at 0.01 it first jumps to 6.4, and from there bf16's
  // trajectory turned on how a kernel's threads split its sums (0.6 at
  // one thread, 2.0 at two).
  SolverSpec solver;
  solver.set_base_lr(0.003f);
  solver.set_momentum(0.9f);
  for (Precision p : {FP32, BF16}) {
    auto n = net(p);
    auto optimizer = Optimizer::create(solver, n->params().size());
    n->forward(true);
    const float initial = n->loss_layer().loss();
    for (int step = 0; step < 50; ++step) {
      if (step > 0) n->forward(true);
      n->backward();
      optimizer->step(n->params().values(), n->params().grads(), solver.base_lr());
    }
    n->forward(true);
    EXPECT_GT(initial, 2.f) << Precision_Name(p);
    EXPECT_LT(n->loss_layer().loss(), 0.25f * initial) << Precision_Name(p);
  }
}

}  // namespace
}  // namespace dptrain
