// Every layer type, inside a small net (see layer_test_util.h): forward
// against a naive NCHW reference written out here, backward against
// central finite differences of the loss for the input and every
// parameter. Then the behaviours around them: errors a user can cause,
// BatchNorm's running statistics and synchronization, the dropout mask's
// determinism, and the implementations oneDNN picks for a LeNet.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <barrier>
#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "core/engine.h"
#include "core/error.h"
#include "layer_test_util.h"

namespace dptrain {
namespace {

using layer_test::ConvShape;
using layer_test::expect_gradients_match;
using layer_test::expect_near_all;
using layer_test::GradCheck;
using layer_test::Harness;
using layer_test::HarnessOptions;
using layer_test::PoolKind;
using layer_test::Shape;
using layer_test::shape_of;
using ::testing::HasSubstr;
using dims = dnnl::memory::dims;

constexpr double kFwdTol = 1e-4;  // forward vs reference, relative to the largest value

// ---- Convolution ----------------------------------------------------------

struct ConvCase {
  std::string name;
  dims input;
  ConvShape conv;
  bool bias = true;
  bool winograd = false;  // net.convolution_algorithm: WINOGRAD
};

void PrintTo(const ConvCase& c, std::ostream* os) { *os << c.name; }

class ConvolutionTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvolutionTest, ForwardMatchesReferenceAndGradientsMatchFiniteDifferences) {
  const ConvCase& c = GetParam();
  const ConvShape& p = c.conv;
  const std::string layer =
      "layer { name: 'conv' type: 'Convolution' convolution { num_output: " + std::to_string(p.oc) +
      " kernel_size: " + std::to_string(p.k) + " stride: " + std::to_string(p.stride) +
      " pad: " + std::to_string(p.pad) + " dilation: " + std::to_string(p.dilation) +
      " group: " + std::to_string(p.group) + " bias: " + (c.bias ? "true" : "false") + " } }";
  Harness h((c.winograd ? "convolution_algorithm: WINOGRAD\n" : "") + layer, c.input);
  if (c.winograd) {
    // oneDNN has Winograd kernels (for all three passes) on AVX-512 only;
    // elsewhere, and off 3x3 stride 1, every pass falls back to direct.
    std::string d;
    for (const auto& l : h.net().layers())
      if (l->name() == "conv") d = l->describe();
    const bool eligible = p.k == 3 && p.stride == 1 && p.dilation == 1 && p.group == 1 &&
                          c.input[1] % 16 == 0 && p.oc % 16 == 0;
    const size_t passes = eligible && has_avx512_core() ? 3 : 0;
    size_t found = 0;
    for (size_t at = d.find("wino"); at != std::string::npos; at = d.find("wino", at + 1)) ++found;
    EXPECT_EQ(found, passes) << d;
  }
  auto w = h.weights();
  // A non-zero bias, so that it shows in the forward check.
  if (c.bias) {
    std::vector<float> b(static_cast<size_t>(p.oc));
    for (size_t i = 0; i < b.size(); ++i) b[i] = 0.1f * static_cast<float>(i) - 0.2f;
    h.set_weight("conv.bias", b);
    w = h.weights();
  }
  h.loss();
  Shape out;
  const auto want = layer_test::conv_ref(h.input(), shape_of(c.input), w["conv.weight"],
                                         c.bias ? w["conv.bias"] : std::vector<float>(), p, &out);
  EXPECT_EQ(h.dims("conv"), (dims{out.n, out.c, out.h, out.w}));
  expect_near_all(h.data("conv"), want, kFwdTol, "conv");
  expect_gradients_match(h);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvolutionTest,
    ::testing::Values(
        ConvCase{"basic3x3pad1", {2, 3, 5, 5}, {4, 3, 1, 1}},
        ConvCase{"stride2", {2, 3, 7, 6}, {5, 3, 2, 1}},
        ConvCase{"dilation2", {2, 2, 7, 7}, {3, 3, 1, 2, 2}},
        ConvCase{"groups2", {2, 4, 5, 5}, {6, 3, 1, 1, 1, 2}},
        ConvCase{"depthwise", {2, 4, 5, 5}, {4, 3, 1, 1, 1, 4}},
        ConvCase{"depthwise_multiplier2", {2, 3, 5, 5}, {6, 3, 1, 0, 1, 3}},
        ConvCase{"no_bias", {2, 3, 5, 5}, {4, 3, 1, 1}, false},
        ConvCase{"blocked16", {2, 16, 4, 4}, {16, 3, 1, 1}},
        ConvCase{"winograd", {2, 16, 9, 7}, {32, 3, 1, 1}, true, true},
        ConvCase{"winograd_no_bias", {2, 32, 6, 6}, {16, 3, 1, 0}, false, true},
        ConvCase{"winograd_falls_back_on_stride2", {2, 16, 7, 7}, {16, 3, 2, 1}, true, true},
        ConvCase{"winograd_falls_back_on_3_channels", {2, 3, 6, 6}, {16, 3, 1, 1}, true, true}),
    [](const auto& tp) { return tp.param.name; });

// ---- Pooling ----------------------------------------------------------------

struct PoolCase {
  std::string name;
  PoolKind kind;
  int64_t k, s, pad;
};

class PoolingTest : public ::testing::TestWithParam<PoolCase> {};

TEST_P(PoolingTest, ForwardMatchesReferenceAndGradientsMatchFiniteDifferences) {
  const PoolCase& c = GetParam();
  const std::string type = c.kind == PoolKind::kMax ? "MaxPool" : "AvgPool";
  const std::string layer =
      "layer { name: 'pool' type: '" + type + "' pooling { kernel_size: " + std::to_string(c.k) +
      " stride: " + std::to_string(c.s) + " pad: " + std::to_string(c.pad) +
      " exclude_padding: " + (c.kind == PoolKind::kAvgExclude ? "true" : "false") + " } }";
  const dims input{2, 3, 6, 7};
  Harness h(layer, input);
  h.loss();
  Shape out;
  const auto want = layer_test::pool_ref(h.input(), shape_of(input), c.kind, c.k, c.s, c.pad, &out);
  EXPECT_EQ(h.dims("pool"), (dims{out.n, out.c, out.h, out.w}));
  expect_near_all(h.data("pool"), want, kFwdTol, "pool");
  // Small steps: a max must not change places.
  expect_gradients_match(h, {.eps = 1e-3});
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, PoolingTest,
    ::testing::Values(PoolCase{"max2x2", PoolKind::kMax, 2, 2, 0},
                      PoolCase{"max3x3s2pad1", PoolKind::kMax, 3, 2, 1},
                      PoolCase{"avg_include_padding", PoolKind::kAvgInclude, 3, 2, 1},
                      PoolCase{"avg_exclude_padding", PoolKind::kAvgExclude, 3, 2, 1},
                      PoolCase{"avg2x2", PoolKind::kAvgInclude, 2, 2, 0}),
    [](const auto& tp) { return tp.param.name; });

// Max pooling whose windows do not overlap runs its own loops
// (test_max_pool_loops.cc) in the net: on 20 channels blocked by 16 (the
// layout a 3x3 convolution of 3 channels leaves), a last row and column
// outside every window.
TEST(MaxPoolLoopsInANet, ForwardMatchesReferenceAndGradientsMatchFiniteDifferences) {
  const dims input{2, 3, 7, 7};
  Harness h(
      "layer { name: 'conv' type: 'Convolution' convolution { num_output: 20 kernel_size: 3 pad: 1 "
      "} }\nlayer { name: 'pool' type: 'MaxPool' pooling { kernel_size: 2 } }",
      input);
  EXPECT_EQ(h.layer("pool").describe().rfind("loop over", 0), 0u) << h.layer("pool").describe();
  h.loss();
  Shape out;
  const auto want =
      layer_test::pool_ref(h.data("conv"), {2, 20, 7, 7}, PoolKind::kMax, 2, 2, 0, &out);
  EXPECT_EQ(h.dims("pool"), (dims{2, 20, 3, 3}));
  expect_near_all(h.data("pool"), want, kFwdTol, "pool");
  expect_gradients_match(h, {.eps = 1e-3});
}

// ---- InnerProduct -------------------------------------------------------------

TEST(InnerProductTest, FourDAndTwoDInputsMatchReferenceAndFiniteDifferences) {
  // ip4 reads the 4-d output of pre; ip2 reads ip4's 2-d output.
  const std::string layers =
      "layer { name: 'ip4' type: 'InnerProduct' inner_product { num_output: 5 } }\n"
      "layer { name: 'ip2' type: 'InnerProduct' inner_product { num_output: 4 bias: false } }";
  const dims input{3, 2, 3, 4};
  Harness h(layers, input);
  std::vector<float> b(5);
  for (size_t i = 0; i < b.size(); ++i) b[i] = 0.05f * static_cast<float>(i);
  h.set_weight("ip4.bias", b);
  h.loss();
  auto w = h.weights();
  const auto y4 = layer_test::inner_product_ref(h.input(), 3, w["ip4.weight"], w["ip4.bias"], 5);
  expect_near_all(h.data("ip4"), y4, kFwdTol, "ip4");
  const auto y2 = layer_test::inner_product_ref(y4, 3, w["ip2.weight"], {}, 4);
  expect_near_all(h.data("ip2"), y2, kFwdTol, "ip2");
  expect_gradients_match(h);
}

// ---- Activations --------------------------------------------------------------

struct ActCase {
  std::string type;
  float alpha;  // what the layer uses (its default when `set_alpha` is false)
  bool set_alpha;
};

class ActivationTest : public ::testing::TestWithParam<ActCase> {
 protected:
  std::string act_layer() const {
    const ActCase& c = GetParam();
    return "layer { name: 'act' type: '" + c.type + "'" +
           (c.set_alpha ? " activation { alpha: " + std::to_string(c.alpha) + " }" : "") + " }";
  }
};

TEST_P(ActivationTest, StandaloneAfterPooling) {
  const ActCase& c = GetParam();
  // A 1x1 average pool (the identity) keeps the activation from fusing
  // into pre.
  Harness h("layer { name: 'pool' type: 'AvgPool' pooling { kernel_size: 1 } }\n" + act_layer(),
            {2, 3, 4, 4});
  EXPECT_EQ(h.layer("act").type(), c.type);
  h.loss();
  expect_near_all(h.data("act"), layer_test::activation_ref(c.type, c.alpha, h.input()), kFwdTol,
                  "act");
  // Inputs are at least 1/(2*96) away from the ReLU kink.
  expect_gradients_match(h, {.eps = 2e-3});
}

TEST_P(ActivationTest, FusedIntoConvolution) {
  const ActCase& c = GetParam();
  Harness h(
      "layer { name: 'conv' type: 'Convolution' convolution { num_output: 4 kernel_size: 3 "
      "pad: 1 } }\n" +
          act_layer(),
      {2, 3, 4, 4});
  EXPECT_EQ(h.layer("conv").fused(), c.type);
  h.loss();
  auto w = h.weights();
  Shape out;
  const auto conv = layer_test::conv_ref(h.input(), {2, 3, 4, 4}, w["conv.weight"], w["conv.bias"],
                                         {4, 3, 1, 1}, &out);
  expect_near_all(h.data("act"), layer_test::activation_ref(c.type, c.alpha, conv), kFwdTol, "act");
  expect_gradients_match(h, {.eps = 1e-3});
}

TEST_P(ActivationTest, FusedIntoInnerProduct) {
  const ActCase& c = GetParam();
  Harness h(
      "layer { name: 'ip' type: 'InnerProduct' inner_product { num_output: 6 } }\n" + act_layer(),
      {3, 2, 2, 3});
  EXPECT_EQ(h.layer("ip").fused(), c.type);
  h.loss();
  auto w = h.weights();
  const auto ip = layer_test::inner_product_ref(h.input(), 3, w["ip.weight"], w["ip.bias"], 6);
  expect_near_all(h.data("act"), layer_test::activation_ref(c.type, c.alpha, ip), kFwdTol, "act");
  expect_gradients_match(h, {.eps = 1e-3});
}

INSTANTIATE_TEST_SUITE_P(
    Types, ActivationTest,
    ::testing::Values(ActCase{"ReLU", 0.f, false}, ActCase{"LeakyReLU", 0.01f, false},
                      ActCase{"LeakyReLU", 0.2f, true}, ActCase{"ELU", 1.f, false},
                      ActCase{"ELU", 0.5f, true}, ActCase{"Sigmoid", 0.f, false},
                      ActCase{"Tanh", 0.f, false}),
    [](const auto& tp) { return tp.param.type + (tp.param.set_alpha ? "_alpha" : ""); });

// ---- BatchNorm ----------------------------------------------------------------

// Scale and shift away from their initial one and zero.
void set_affine(Harness& h, const std::string& bn, int64_t channels) {
  std::vector<float> gamma(static_cast<size_t>(channels)), beta(gamma.size());
  for (size_t c = 0; c < gamma.size(); ++c) {
    gamma[c] = 0.8f + 0.15f * static_cast<float>(c % 5);
    beta[c] = 0.07f * static_cast<float>(c % 3) -
              0.05f;  // never 0: x at the mean would sit on the ReLU kink
  }
  h.set_weight(bn + ".scale", gamma);
  h.set_weight(bn + ".shift", beta);
}

// Checks `top` (the BatchNorm's output, or its fused ReLU's) against the
// reference with the statistics of the harness's input batch, which it
// returns.
void expect_batch_norm_output(Harness& h, const std::string& top, bool relu,
                              std::vector<double>* mean, std::vector<double>* var) {
  auto w = h.weights();
  const Shape s = shape_of(h.input_dims());
  layer_test::channel_stats(h.input(), s, mean, var);
  expect_near_all(h.data(top),
                  layer_test::batch_norm_ref(h.input(), s, *mean, *var, w["bn.scale"],
                                             w["bn.shift"], 1e-5, relu),
                  kFwdTol, top);
}

struct BnCase {
  std::string name;
  dims input;
  bool relu;
  bool sync = false;  // the synchronized path, on one replica
};

class BatchNormTest : public ::testing::TestWithParam<BnCase> {};

TEST_P(BatchNormTest, TrainingForwardMatchesReferenceAndGradientsMatchFiniteDifferences) {
  const BnCase& c = GetParam();
  std::string layers = "layer { name: 'bn' type: 'BatchNorm' batch_norm { sync: " +
                       std::string(c.sync ? "true" : "false") + " } }";
  if (c.relu) layers += "\nlayer { name: 'relu' type: 'ReLU' }";
  Harness h(layers, c.input);
  const std::string top = c.relu ? "relu" : "bn";
  EXPECT_EQ(h.layer("bn").fused(), c.relu ? "ReLU" : "");
  EXPECT_EQ(h.layer("bn").describe().find("sync") != std::string::npos, c.sync);
  set_affine(h, "bn", c.input[1]);
  h.loss();
  std::vector<double> mean, var;
  expect_batch_norm_output(h, top, c.relu, &mean, &var);
  expect_gradients_match(h, {.eps = c.relu ? 1e-3 : 1e-2});
}

// 3 channels: pre writes nChw8c; 16: pre writes plain nchw.
INSTANTIATE_TEST_SUITE_P(Shapes, BatchNormTest,
                         ::testing::Values(BnCase{"channels3", {2, 3, 4, 5}, false},
                                           BnCase{"channels3_relu", {2, 3, 4, 5}, true},
                                           BnCase{"channels16", {2, 16, 3, 3}, false},
                                           BnCase{"channels16_relu", {2, 16, 3, 3}, true},
                                           BnCase{"sync_channels3", {2, 3, 4, 5}, false, true},
                                           BnCase{"sync_channels3_relu", {2, 3, 4, 5}, true, true},
                                           BnCase{
                                               "sync_channels16_relu", {2, 16, 3, 3}, true, true},
                                           BnCase{"sync_channels20", {2, 20, 3, 3}, false, true}),
                         [](const auto& tp) { return tp.param.name; });

TEST(BatchNormTest, TwoDInput) {
  Harness h(
      // No bias: BatchNorm subtracts it again, its gradient is zero.
      "layer { name: 'ip' type: 'InnerProduct' inner_product { num_output: 5 bias: false } }\n"
      "layer { name: 'bn' type: 'BatchNorm' }",
      {6, 2, 2, 2});
  set_affine(h, "bn", 5);
  h.loss();
  auto w = h.weights();
  const auto ip = layer_test::inner_product_ref(h.input(), 6, w["ip.weight"], {}, 5);
  const Shape s{6, 5, 1, 1};
  std::vector<double> mean, var;
  layer_test::channel_stats(ip, s, &mean, &var);
  expect_near_all(
      h.data("bn"),
      layer_test::batch_norm_ref(ip, s, mean, var, w["bn.scale"], w["bn.shift"], 1e-5, false),
      kFwdTol, "bn");
  expect_gradients_match(h);
}

TEST(BatchNormTest, OnTheInputWhichNeedsNoGradient) {
  // Reads "data" directly (plain nchw); computes the input gradient into a
  // buffer of its own for the scale and shift gradients.
  Harness h("layer { name: 'bn' type: 'BatchNorm' }\nlayer { name: 'relu' type: 'ReLU' }",
            {3, 2, 3, 3}, {.pre = false});
  set_affine(h, "bn", 2);
  h.loss();
  std::vector<double> mean, var;
  expect_batch_norm_output(h, "relu", true, &mean, &var);
  expect_gradients_match(h, {.eps = 1e-3, .input = false});
}

TEST(BatchNormTest, ChannelsLastRunsTheLoops) {
  // One channel of "data" is channels-last: the loops of
  // batch_norm_loops.h run it (their own tests cover more channels), the
  // layer around them is checked here.
  const dims input{4, 1, 5, 6};
  Harness h(
      "layer { name: 'bn' type: 'BatchNorm' batch_norm { momentum: 0.5 } }\n"
      "layer { name: 'relu' type: 'ReLU' }",
      input, {.pre = false});
  EXPECT_EQ(h.layer("bn").describe().find("loop over "), 0u) << h.layer("bn").describe();
  set_affine(h, "bn", 1);
  h.loss();
  std::vector<double> mean, var;
  expect_batch_norm_output(h, "relu", true, &mean, &var);
  auto w = h.weights();
  const Shape s = shape_of(input);
  const double m = static_cast<double>(s.n * s.h * s.w);
  EXPECT_NEAR(w["bn.running_mean"][0], 0.5 * mean[0], 1e-5);
  EXPECT_NEAR(w["bn.running_var"][0], 0.5 + 0.5 * var[0] * m / (m - 1), 1e-5);
  h.loss(false);
  expect_near_all(
      h.data("relu"),
      layer_test::batch_norm_ref(h.input(), s, {w["bn.running_mean"][0]}, {w["bn.running_var"][0]},
                                 w["bn.scale"], w["bn.shift"], 1e-5, true),
      kFwdTol, "relu eval");
  expect_gradients_match(h, {.eps = 1e-3, .input = false});
}

TEST(BatchNormTest, RunningStatisticsFollowMomentumAndEvaluationUsesThem) {
  const dims input{2, 3, 3, 4};
  Harness h("layer { name: 'bn' type: 'BatchNorm' batch_norm { momentum: 0.25 eps: 0.001 } }",
            input);
  set_affine(h, "bn", 3);
  const Shape s = shape_of(input);
  const double m = static_cast<double>(s.n * s.h * s.w);
  std::vector<double> rmean(3, 0.0), rvar(3, 1.0);
  for (int step = 0; step < 3; ++step) {
    for (float& v : h.input()) v = v * 1.5f + 0.3f;  // a new batch
    h.loss(true);
    std::vector<double> mean, var;
    layer_test::channel_stats(h.input(), s, &mean, &var);
    for (size_t c = 0; c < 3; ++c) {
      rmean[c] = 0.75 * rmean[c] + 0.25 * mean[c];
      rvar[c] = 0.75 * rvar[c] + 0.25 * var[c] * m / (m - 1);  // unbiased, as PyTorch
    }
    auto w = h.weights();
    for (size_t c = 0; c < 3; ++c) {
      EXPECT_NEAR(w["bn.running_mean"][c], rmean[c], 1e-5 * (1 + std::abs(rmean[c]))) << step;
      EXPECT_NEAR(w["bn.running_var"][c], rvar[c], 1e-5 * (1 + rvar[c])) << step;
    }
  }
  auto w = h.weights();
  const auto before = w["bn.running_mean"];
  h.loss(false);
  expect_near_all(h.data("bn"),
                  layer_test::batch_norm_ref(h.input(), s, rmean, rvar, w["bn.scale"],
                                             w["bn.shift"], 1e-3, false),
                  kFwdTol, "bn eval");
  EXPECT_EQ(h.weights()["bn.running_mean"], before) << "evaluation must not update them";
}

TEST(BatchNormTest, ExportsScaleShiftAsParametersAndStatisticsAsBuffers) {
  Harness h("layer { name: 'bn' type: 'BatchNorm' }", {2, 3, 2, 2});
  std::vector<std::string> params, buffers;
  for (const auto& p : h.net().params().params()) params.push_back(p->name);
  for (const auto& p : h.net().params().buffers()) buffers.push_back(p->name);
  EXPECT_EQ(params, (std::vector<std::string>{"pre.weight", "bn.scale", "bn.shift", "head.weight",
                                              "head.bias"}));
  EXPECT_EQ(buffers, (std::vector<std::string>{"bn.running_mean", "bn.running_var"}));
  auto w = h.weights();
  EXPECT_EQ(w["bn.scale"], std::vector<float>(3, 1.f));
  EXPECT_EQ(w["bn.shift"], std::vector<float>(3, 0.f));
  EXPECT_EQ(w["bn.running_mean"], std::vector<float>(3, 0.f));
  EXPECT_EQ(w["bn.running_var"], std::vector<float>(3, 1.f));
}

TEST(BatchNormTest, DoesNotFuseOtherActivations) {
  Harness h("layer { name: 'bn' type: 'BatchNorm' }\nlayer { name: 'act' type: 'LeakyReLU' }",
            {2, 3, 2, 2});
  EXPECT_EQ(h.layer("bn").fused(), "");
  EXPECT_EQ(h.layer("act").type(), "LeakyReLU");
}

// Stands for `replicas` replicas that all hold the same batch: the sum over
// them is the local value times their number.
class ReplicatingReducer : public ReplicaReducer {
 public:
  explicit ReplicatingReducer(int replicas) : replicas_(replicas) {}
  void sum(double* data, size_t count) override {
    for (size_t i = 0; i < count; ++i) data[i] *= replicas_;
    ++calls;
  }
  int replicas() const override { return replicas_; }
  int calls = 0;

 private:
  int replicas_;
};

TEST(SyncBatchNormTest, IdenticalReplicasEqualPlainBatchNorm) {
  std::set<std::string> layouts;
  for (const bool relu : {false, true}) {
    for (const int64_t channels : {3, 16}) {
      SCOPED_TRACE("relu " + std::to_string(relu) + " channels " + std::to_string(channels));
      const std::string act = relu ? "\nlayer { name: 'relu' type: 'ReLU' }" : "";
      const std::string top = relu ? "relu" : "bn";
      const dims input{2, channels, 3, 3};
      const int replicas = 3;
      ReplicatingReducer reducer(replicas);
      Harness plain("layer { name: 'bn' type: 'BatchNorm' }" + act, input);
      Harness sync("layer { name: 'bn' type: 'BatchNorm' batch_norm { sync: true } }" + act, input,
                   {.reducer = &reducer});
      EXPECT_THAT(sync.layer("bn").describe(), HasSubstr("sync x3"));
      EXPECT_THAT(plain.layer("bn").describe(), ::testing::Not(HasSubstr("sync")));
      layouts.insert(layout_name(sync.net().blob("pre").desc()));
      for (Harness* h : {&plain, &sync}) set_affine(*h, "bn", channels);
      for (int step = 0; step < 2; ++step) {
        plain.forward_backward();
        sync.forward_backward();
      }
      EXPECT_EQ(reducer.calls, 4);  // forward and backward, twice
      expect_near_all(sync.data(top), plain.data(top), 1e-5, "top");
      expect_near_all(sync.diff("pre"), plain.diff("pre"), 1e-4, "d data");
      for (const std::string p : {"pre.weight", "bn.scale", "bn.shift", "head.weight"}) {
        expect_near_all(sync.grad(p), plain.grad(p), 1e-4, p);
      }
      // The running variance is unbiased with the global count.
      const Shape s = shape_of(input);
      std::vector<double> mean, var;
      layer_test::channel_stats(sync.input(), s, &mean, &var);
      const double m = static_cast<double>(replicas * s.n * s.h * s.w);
      std::vector<float> want_mean(mean.size()), want_var(var.size());
      for (size_t c = 0; c < mean.size(); ++c) {
        want_mean[c] = static_cast<float>(0.19 * mean[c]);  // 0.1 and 0.9 * 0.1
        want_var[c] = static_cast<float>(0.81 + 0.19 * var[c] * m / (m - 1));
      }
      auto ws = sync.weights();
      expect_near_all(ws["bn.running_mean"], want_mean, 1e-5, "running_mean");
      expect_near_all(ws["bn.running_var"], want_var, 1e-5, "running_var");
      sync.loss(false);
      expect_near_all(
          sync.data(top),
          layer_test::batch_norm_ref(sync.input(), s, {want_mean.begin(), want_mean.end()},
                                     {want_var.begin(), want_var.end()}, ws["bn.scale"],
                                     ws["bn.shift"], 1e-5, relu),
          1e-4, "eval top");
    }
  }
  // The hand-written gradient walked a plain and a channel-blocked layout.
  EXPECT_TRUE(layouts.count("nchw")) << ::testing::PrintToString(layouts);
  EXPECT_TRUE(layouts.count("nChw8c") || layouts.count("nChw16c"))
      << ::testing::PrintToString(layouts);
}

TEST(SyncBatchNormTest, OneReplicaOrNoReducerTakesTheSamePathWithoutReducing) {
  ReplicatingReducer one(1);
  const std::string layers = "layer { name: 'bn' type: 'BatchNorm' batch_norm { sync: true } }";
  Harness alone(layers, {2, 3, 2, 2}, {.reducer = &one});
  Harness none(layers, {2, 3, 2, 2});
  Harness plain("layer { name: 'bn' type: 'BatchNorm' }", {2, 3, 2, 2});
  EXPECT_THAT(alone.layer("bn").describe(), HasSubstr("sync x1"));
  for (Harness* h : {&alone, &none, &plain}) h->forward_backward();
  EXPECT_EQ(one.calls, 0);
  EXPECT_EQ(alone.data("bn"), none.data("bn"));
  EXPECT_EQ(alone.diff("pre"), none.diff("pre"));
  expect_near_all(alone.data("bn"), plain.data("bn"), 1e-5, "vs plain");
  expect_near_all(alone.diff("pre"), plain.diff("pre"), 1e-4, "d data vs plain");
}

TEST(SyncBatchNormTest, StatisticsAreExactOnLargeBatches) {
  // 3 * 32 * 32 = 3072 values per channel and a mean far from zero. Summed
  // in double, the statistics are off by a few float roundings only.
  const dims input{3, 8, 32, 32};
  Harness h("layer { name: 'bn' type: 'BatchNorm' batch_norm { sync: true momentum: 1 } }", input);
  for (size_t i = 0; i < h.input().size(); ++i) {
    h.input()[i] = 4.f + h.input()[i] * (1.f + static_cast<float>(i % 8));
  }
  h.loss();
  const Shape s = shape_of(input);
  std::vector<double> mean, var;
  layer_test::channel_stats(h.input(), s, &mean, &var);
  const double m = static_cast<double>(s.n * s.h * s.w);
  auto w = h.weights();
  for (size_t c = 0; c < mean.size(); ++c) {
    EXPECT_NEAR(w["bn.running_mean"][c], mean[c], 5e-7 * std::abs(mean[c])) << c;
    const double unbiased = var[c] * m / (m - 1);
    EXPECT_NEAR(w["bn.running_var"][c], unbiased, 5e-7 * unbiased) << c;
  }
}

// Two replicas in two threads, exchanging through shared memory.
class ExchangeReducer : public ReplicaReducer {
 public:
  struct Shared {
    std::barrier<> barrier{2};
    std::vector<double> slots[2];
  };
  ExchangeReducer(Shared* shared, int rank) : shared_(shared), rank_(rank) {}
  void sum(double* data, size_t count) override {
    shared_->slots[rank_].assign(data, data + count);
    shared_->barrier.arrive_and_wait();
    for (size_t i = 0; i < count; ++i) data[i] = shared_->slots[0][i] + shared_->slots[1][i];
    shared_->barrier.arrive_and_wait();
  }
  int replicas() const override { return 2; }

 private:
  Shared* shared_;
  int rank_;
};

TEST(SyncBatchNormTest, TwoReplicasOnHalfBatchesEqualOneOnTheWholeBatch) {
  const std::string layers =
      "layer { name: 'bn' type: 'BatchNorm' batch_norm { sync: true } }\n"
      "layer { name: 'relu' type: 'ReLU' }";
  const int64_t c = 8, hw = 3;
  Harness whole(layers, {4, c, hw, hw});
  set_affine(whole, "bn", c);
  ExchangeReducer::Shared shared;
  ExchangeReducer r0(&shared, 0), r1(&shared, 1);
  Harness half0(layers, {2, c, hw, hw}, {.reducer = &r0});
  Harness half1(layers, {2, c, hw, hw}, {.reducer = &r1});
  const size_t half = whole.input().size() / 2;
  // The same parameters everywhere, each half its part of the batch.
  for (Harness* h : {&half0, &half1}) {
    h->net().params().import_weights(whole.net().params().export_weights(), "whole");
  }
  std::copy(whole.input().begin(), whole.input().begin() + static_cast<long>(half),
            half0.input().begin());
  std::copy(whole.input().begin() + static_cast<long>(half), whole.input().end(),
            half1.input().begin());
  const std::vector<int32_t> labels = {0, 1, 2, 1};
  const std::vector<int32_t> labels0(labels.begin(), labels.begin() + 2),
      labels1(labels.begin() + 2, labels.end());
  whole.net().set_input(whole.input().data(), labels.data(), 4);
  half0.net().set_input(half0.input().data(), labels0.data(), 2);
  half1.net().set_input(half1.input().data(), labels1.data(), 2);

  whole.forward_backward();
  std::thread other([&] { half1.forward_backward(); });
  half0.forward_backward();
  other.join();

  const auto top = whole.data("relu");
  const auto top0 = half0.data("relu"), top1 = half1.data("relu");
  std::vector<float> joined(top0);
  joined.insert(joined.end(), top1.begin(), top1.end());
  expect_near_all(joined, top, 1e-5, "top");
  // Each replica's input gradient is of its own mean loss (twice the
  // weight of the whole batch's); parameter gradients average to the
  // whole batch's.
  const auto dx = whole.diff("pre");
  std::vector<float> dx_joined(half0.diff("pre"));
  const auto dx1 = half1.diff("pre");
  dx_joined.insert(dx_joined.end(), dx1.begin(), dx1.end());
  for (float& v : dx_joined) v *= 0.5f;
  expect_near_all(dx_joined, dx, 1e-4, "d data");
  for (const std::string p : {"pre.weight", "bn.scale", "bn.shift", "head.weight"}) {
    std::vector<float> mean = half0.grad(p);
    const auto g1 = half1.grad(p);
    for (size_t i = 0; i < mean.size(); ++i) mean[i] = 0.5f * (mean[i] + g1[i]);
    expect_near_all(mean, whole.grad(p), 1e-4, p);
  }
  auto w = whole.weights(), w0 = half0.weights(), w1 = half1.weights();
  expect_near_all(w0["bn.running_mean"], w["bn.running_mean"], 1e-5, "running_mean");
  expect_near_all(w0["bn.running_var"], w["bn.running_var"], 1e-5, "running_var");
  EXPECT_EQ(w0["bn.running_var"], w1["bn.running_var"]);
}

// ---- Dropout ------------------------------------------------------------------

TEST(DropoutTest, TrainingScalesKeptElementsAndEvaluationIsTheIdentity) {
  const dims input{4, 8, 16, 16};
  Harness h("layer { name: 'drop' type: 'Dropout' dropout { ratio: 0.3 } }", input);
  h.net().state().step = 5;
  h.loss(true);
  const auto x = h.data("pre"), y = h.data("drop");
  size_t dropped = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (y[i] == 0.f) {
      ++dropped;
    } else {
      ASSERT_FLOAT_EQ(y[i], x[i] / 0.7f) << i;
    }
  }
  const double fraction = static_cast<double>(dropped) / static_cast<double>(x.size());
  EXPECT_NEAR(fraction, 0.3, 0.02);
  h.loss(false);
  EXPECT_EQ(h.data("drop"), x);
}

TEST(DropoutTest, MaskIsAFunctionOfSeedStepAndGlobalSamplePositionOnly) {
  const std::string layer = "layer { name: 'drop' type: 'Dropout' }";
  const dims input{2, 4, 20, 20};  // more than one chunk of the generator per sample
  Harness h(layer, input);
  auto mask = [&](int64_t step, int64_t offset, int threads) {
    h.net().state().step = step;
    h.net().state().sample_offset = offset;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    h.loss(true);
    omp_set_num_threads(saved);
    std::vector<bool> kept;
    for (float v : h.data("drop")) kept.push_back(v != 0.f);
    return kept;
  };
  const auto a = mask(7, 0, 2);
  EXPECT_EQ(mask(7, 0, 2), a);
  EXPECT_EQ(mask(7, 0, 1), a) << "the mask must not depend on the thread count";
  EXPECT_NE(mask(8, 0, 2), a);
  // A sample keeps its mask wherever it sits in the local batch: the mask of
  // sample 1 at offset 0 is that of sample 0 at offset 1 (another rank count).
  const auto shifted = mask(7, 1, 2);
  const size_t per_sample = a.size() / 2;
  EXPECT_TRUE(
      std::equal(a.begin() + static_cast<std::ptrdiff_t>(per_sample), a.end(), shifted.begin()));
  EXPECT_FALSE(
      std::equal(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(per_sample), shifted.begin()));
  Harness again(layer, input);  // same seed: same masks
  again.net().state().step = 7;
  again.loss(true);
  std::vector<bool> kept_again;
  for (float v : again.data("drop")) kept_again.push_back(v != 0.f);
  EXPECT_EQ(kept_again, a);
  Harness other(layer, input, {.seed = 12});
  other.input() = h.input();
  other.net().state().step = 7;
  other.loss(true);
  std::vector<bool> kept_other;
  for (float v : other.data("drop")) kept_other.push_back(v != 0.f);
  EXPECT_NE(kept_other, a) << "another seed must draw another mask";
}

TEST(DropoutTest, MaskIsTheSameInABlockedLayout) {
  // After a convolution the blob is blocked (nChw16c and the like); the
  // mask is drawn in logical order, so a plain input draws the same one.
  // (An output that is exactly 0 cannot show its mask; it counts as kept.)
  Harness plain("layer { name: 'drop' type: 'Dropout' }", {2, 16, 4, 4});
  Harness blocked(
      "layer { name: 'conv' type: 'Convolution' convolution { num_output: 16 kernel_size: 3 } }\n"
      "layer { name: 'drop' type: 'Dropout' }",
      {2, 3, 6, 6});
  plain.net().state().step = blocked.net().state().step = 4;
  plain.loss(true);
  blocked.loss(true);
  auto kept = [](const std::vector<float>& v) {
    std::vector<bool> k;
    for (float x : v) k.push_back(x != 0.f);
    return k;
  };
  const auto y = blocked.data("drop"), c = blocked.data("conv");
  std::vector<bool> kb;
  for (size_t i = 0; i < y.size(); ++i) kb.push_back(y[i] != 0.f || c[i] == 0.f);
  EXPECT_EQ(kb, kept(plain.data("drop")));
}

TEST(DropoutTest, TwoLayersDrawDifferentMasks) {
  Harness h(
      "layer { name: 'd1' type: 'Dropout' }\n"
      "layer { name: 'd2' type: 'Dropout' bottom: 'pre' }\n"
      "layer { name: 'sum' type: 'Add' bottom: 'd1' bottom: 'd2' }",
      {2, 3, 8, 8});
  h.loss(true);
  EXPECT_NE(h.data("d1"), h.data("d2"));
}

TEST(DropoutTest, GradientsMatchFiniteDifferencesWithTheSameMask) {
  Harness h(
      "layer { name: 'drop' type: 'Dropout' dropout { ratio: 0.4 } }\n"
      "layer { name: 'conv' type: 'Convolution' convolution { num_output: 3 kernel_size: 3 } }",
      {2, 4, 5, 5});
  h.net().state().step = 3;  // every forward of the check draws this mask
  expect_gradients_match(h);
}

TEST(DropoutTest, RejectsRatioOutsideZeroToOne) {
  for (const char* ratio : {"1", "-0.1", "1.5"}) {
    EXPECT_THROW(Harness(std::string("layer { name: 'drop' type: 'Dropout' dropout { ratio: ") +
                             ratio + " } }",
                         {2, 3, 2, 2}),
                 UserError)
        << ratio;
  }
  Harness zero("layer { name: 'drop' type: 'Dropout' dropout { ratio: 0 } }", {2, 3, 2, 2});
  zero.loss(true);
  EXPECT_EQ(zero.data("drop"), zero.data("pre"));
}

// ---- Flatten ------------------------------------------------------------------

TEST(FlattenTest, FeaturesInChannelHeightWidthOrder) {
  // Sigmoid after Flatten: the net keeps a Flatten that feeds no InnerProduct.
  Harness h(
      "layer { name: 'conv' type: 'Convolution' convolution { num_output: 16 kernel_size: 1 } }\n"
      "layer { name: 'flat' type: 'Flatten' }\n"
      "layer { name: 'sig' type: 'Sigmoid' }",
      {2, 3, 3, 2});
  EXPECT_EQ(h.dims("flat"), (dims{2, 16 * 3 * 2}));
  h.loss();
  // The conv output is blocked (nChw8c); Flatten gives plain C, H, W order.
  expect_near_all(h.data("flat"), h.data("conv"), 0, "flat");
  expect_gradients_match(h);
}

TEST(FlattenTest, IsDroppedInFrontOfAnInnerProduct) {
  Harness h("layer { name: 'flat' type: 'Flatten' }", {2, 3, 2, 2});
  for (const auto& l : h.net().layers()) EXPECT_NE(l->type(), "Flatten");
  EXPECT_EQ(h.layer("head").bottom_names(), std::vector<std::string>{"pre"});
}

// ---- Add ----------------------------------------------------------------------

TEST(AddTest, ResidualBlockWithSplit) {
  const dims input{2, 4, 5, 5};
  Harness h(
      "layer { name: 'conv' type: 'Convolution' convolution { num_output: 4 kernel_size: 3 pad: 1 "
      "} }\n"
      "layer { name: 'tanh' type: 'Tanh' }\n"
      "layer { name: 'sum' type: 'Add' bottom: 'pre' bottom: 'tanh' }",
      input);
  int splits = 0;
  for (const auto& l : h.net().layers()) splits += l->type() == "Split";
  EXPECT_EQ(splits, 2);
  h.loss();
  auto w = h.weights();
  Shape out;
  auto want =
      layer_test::activation_ref("Tanh", 0,
                                 layer_test::conv_ref(h.input(), shape_of(input), w["conv.weight"],
                                                      w["conv.bias"], {4, 3, 1, 1}, &out));
  for (size_t i = 0; i < want.size(); ++i) want[i] += h.input()[i];
  expect_near_all(h.data("sum"), want, kFwdTol, "sum");
  expect_gradients_match(h);
}

// The gradients the Adds share storage with: the first Add's top's is both
// BatchNorms' (each told to write its input gradient apart), the second's
// is the second branch of the Split of 'relu' (the convolution gets a
// copy), and the first branch's is the blob's. The ReLU after the first Add
// is fused into it, its gradient taken in place, summing the second
// branch's, before the BatchNorms read it.
TEST(AddTest, ResidualBlockWithBatchNormOnBothPathsAndAFusedRelu) {
  Harness h(
      "layer { name: 'conv' type: 'Convolution' convolution { num_output: 4 kernel_size: 3 pad: 1 "
      "bias: false } }\n"
      "layer { name: 'bn_a' type: 'BatchNorm' }\n"
      "layer { name: 'bn_b' type: 'BatchNorm' bottom: 'pre' }\n"
      "layer { name: 'sum' type: 'Add' bottom: 'bn_a' bottom: 'bn_b' }\n"
      "layer { name: 'relu' type: 'ReLU' }\n"
      "layer { name: 'conv2' type: 'Convolution' convolution { num_output: 4 kernel_size: 1 } }\n"
      "layer { name: 'out' type: 'Add' bottom: 'conv2' bottom: 'relu' }",
      {4, 4, 5, 5});
  EXPECT_EQ(h.layer("sum").fused(), "ReLU");
  EXPECT_THAT(h.layer("sum").describe(), HasSubstr("gradient shared by 2 of 2 bottoms"));
  EXPECT_THAT(h.layer("sum").describe(), HasSubstr("ReLU gradient summing 2 branches"));
  EXPECT_THAT(h.layer("out").describe(), HasSubstr("gradient shared by 1 of 2 bottoms"));
  h.loss();
  // bn_a keeps its values where the channels are padded (4 of 8 or 16),
  // which the Add does not write over.
  if (h.layer("sum").describe().find("over its first bottom") == std::string::npos) {
    const auto a = h.data("bn_a"), b = h.data("bn_b");
    std::vector<float> want(a.size());
    for (size_t i = 0; i < a.size(); ++i) want[i] = std::max(a[i] + b[i], 0.f);
    expect_near_all(h.data("relu"), want, 1e-6, "relu");
  }
  expect_gradients_match(h);
}

// ResNet's identity block: the Add's gradient is the BatchNorm's and the
// shortcut branch's, which the Split reads only after the BatchNorm's
// backward, so the latter must not write over it.
TEST(AddTest, IdentityBlockSharesItsGradientWithTheBatchNormAndTheShortcut) {
  Harness h(
      "layer { name: 'conv' type: 'Convolution' convolution { num_output: 3 kernel_size: 3 pad: 1 "
      "bias: false } }\n"
      "layer { name: 'bn' type: 'BatchNorm' }\n"
      "layer { name: 'sum' type: 'Add' bottom: 'bn' bottom: 'pre' }\n"
      "layer { name: 'relu' type: 'ReLU' }",
      {4, 3, 5, 5});
  EXPECT_THAT(h.layer("sum").describe(), HasSubstr("gradient shared by 2 of 2 bottoms"));
  h.loss();
  expect_gradients_match(h);
}

// A channels-last BatchNorm whose output's gradient an Add shares writes
// its input gradient over its input, which nothing reads after its
// backward; not where a layer before it reads that input in its backward
// too. (One channel of "data" is channels-last, and a product keeps the
// layout of its full bottom.)
TEST(AddTest, BatchNormSharingItsGradientWritesItsInputGradientOverItsInput) {
  for (bool side_reader : {false, true}) {
    SCOPED_TRACE(side_reader);
    Harness h(
        "layer { name: 'gate' type: 'Convolution' convolution { num_output: 1 kernel_size: 5 } }\n"
        "layer { name: 'mul' type: 'Mul' bottom: 'data' bottom: 'gate' }\n" +
            std::string(side_reader ? "layer { name: 'side' type: 'Convolution' bottom: 'mul' "
                                      "convolution { num_output: 1 kernel_size: 1 } }\n"
                                    : "") +
            "layer { name: 'bn' type: 'BatchNorm' bottom: 'mul' }\n"
            "layer { name: 'sum' type: 'Add' bottom: 'bn' bottom: '" +
            (side_reader ? "side" : "data") +
            "' }\n"
            "layer { name: 'relu' type: 'ReLU' }",
        {4, 1, 5, 5}, {.pre = false});
    EXPECT_EQ(h.layer("bn").describe().find("input gradient over its input") == std::string::npos,
              side_reader)
        << h.layer("bn").describe();
    EXPECT_THAT(h.layer("sum").describe(), HasSubstr("gradient shared by"));
    h.loss();
    expect_gradients_match(h, {.eps = 1e-3, .input = false});
  }
}

// A BatchNorm over channels-last values (one channel of "data") whose only
// reader is an Add leaves its normalization to the Add's pass, in training
// and in evaluation, with the Add's ReLU and without (with it, the ReLU's
// gradient pass takes the BatchNorm's gradient sums); where its output has
// another reader, it writes it.
TEST(AddTest, FoldsTheNormalizationOfABatchNormOnlyItReads) {
  const dims input{4, 1, 5, 6};
  const Shape s = shape_of(input);
  for (bool relu : {true, false}) {
    for (bool other_reader : {false, true}) {
      SCOPED_TRACE(std::to_string(relu) + std::to_string(other_reader));
      Harness h(
          "layer { name: 'bn' type: 'BatchNorm' batch_norm { momentum: 0.5 } }\n"
          "layer { name: 'sum' type: 'Add' bottom: 'bn' bottom: 'data' }\n" +
              std::string(relu ? "layer { name: 'relu' type: 'ReLU' }\n" : "") +
              (other_reader ? "layer { name: 'out' type: 'Add' bottom: 'bn' bottom: '" +
                                  std::string(relu ? "relu" : "sum") + "' }"
                            : ""),
          input, {.pre = false});
      EXPECT_EQ(h.layer("sum").describe().find("in one loop") == std::string::npos, other_reader)
          << h.layer("sum").describe();
      EXPECT_EQ(h.layer("bn").describe().find("folded") == std::string::npos, other_reader)
          << h.layer("bn").describe();
      EXPECT_EQ(h.layer("bn").describe().find("gradient sums taken") != std::string::npos,
                relu && !other_reader)
          << h.layer("bn").describe();
      set_affine(h, "bn", 1);
      const std::string top = relu ? "relu" : "sum";
      auto expect_sum = [&](const std::vector<double>& mean, const std::vector<double>& var,
                            const char* what) {
        auto w = h.weights();
        auto want = layer_test::batch_norm_ref(h.input(), s, mean, var, w["bn.scale"],
                                               w["bn.shift"], 1e-5, false);
        for (size_t i = 0; i < want.size(); ++i) {
          want[i] += h.input()[i];
          if (relu) want[i] = std::max(want[i], 0.f);
        }
        expect_near_all(h.data(top), want, kFwdTol, what);
      };
      h.loss();
      std::vector<double> mean, var;
      layer_test::channel_stats(h.input(), s, &mean, &var);
      expect_sum(mean, var, "training");
      auto w = h.weights();
      h.loss(false);
      expect_sum({w["bn.running_mean"][0]}, {w["bn.running_var"][0]}, "evaluation");
      expect_gradients_match(h, {.eps = 1e-3, .input = false});
    }
  }
}

// ResNet's projection shortcut: both bottoms BatchNorms over channels-last
// values that only the Add reads, both normalizations in the Add's pass,
// in training and evaluation, and with the ReLU both BatchNorms' gradient
// sums in its gradient's pass. (A product keeps the layout of its full
// bottom, one channel of "data": the second BatchNorm's input differs from
// the first's and needs a gradient.)
TEST(AddTest, FoldsTheNormalizationsOfBothBatchNormsItAdds) {
  const dims input{4, 1, 5, 5};
  const Shape s = shape_of(input);
  for (bool relu : {true, false}) {
    SCOPED_TRACE(relu);
    Harness h(
        "layer { name: 'gate' type: 'Convolution' convolution { num_output: 1 kernel_size: 5 } }\n"
        "layer { name: 'mul' type: 'Mul' bottom: 'data' bottom: 'gate' }\n"
        "layer { name: 'bn_a' type: 'BatchNorm' bottom: 'data' batch_norm { momentum: 0.5 } }\n"
        "layer { name: 'bn_b' type: 'BatchNorm' bottom: 'mul' batch_norm { momentum: 0.5 } }\n"
        "layer { name: 'sum' type: 'Add' bottom: 'bn_a' bottom: 'bn_b' }\n" +
            std::string(relu ? "layer { name: 'relu' type: 'ReLU' }\n" : ""),
        input, {.pre = false});
    EXPECT_THAT(h.layer("sum").describe(), HasSubstr("both BatchNorms' normalizations"));
    // With the ReLU, its gradient pass takes both BatchNorms' sums.
    EXPECT_EQ(h.layer("sum").describe().find("both BatchNorms' gradient sums") != std::string::npos,
              relu)
        << h.layer("sum").describe();
    for (const char* bn : {"bn_a", "bn_b"}) {
      EXPECT_THAT(h.layer(bn).describe(), HasSubstr("folded")) << bn;
    }
    set_affine(h, "bn_a", 1);
    h.set_weight("bn_b.scale", {1.3f});
    h.set_weight("bn_b.shift", {-0.2f});
    const std::string top = relu ? "relu" : "sum";
    auto expect_sum = [&](const std::vector<float>& b_input, bool training, const char* what) {
      auto w = h.weights();
      auto normalized = [&](const std::vector<float>& x, const std::string& bn) {
        std::vector<double> mean{w[bn + ".running_mean"][0]}, var{w[bn + ".running_var"][0]};
        if (training) layer_test::channel_stats(x, s, &mean, &var);
        return layer_test::batch_norm_ref(x, s, mean, var, w[bn + ".scale"], w[bn + ".shift"], 1e-5,
                                          false);
      };
      auto want = normalized(h.input(), "bn_a");
      const auto b = normalized(b_input, "bn_b");
      for (size_t i = 0; i < want.size(); ++i) {
        want[i] += b[i];
        if (relu) want[i] = std::max(want[i], 0.f);
      }
      expect_near_all(h.data(top), want, kFwdTol, what);
    };
    h.loss();
    expect_sum(h.data("mul"), true, "training");
    h.loss(false);
    expect_sum(h.data("mul"), false, "evaluation");
    expect_gradients_match(h, {.eps = 1e-3, .input = false});
  }
}

// The Add's ReLU output read by three layers: of the two Split branches'
// gradients the Add sums, one is added before the pass that takes the
// BatchNorm's gradient sums, the other in it.
TEST(AddTest, TakesTheGradientSumsOfItsBatchNormWithBranchesToAdd) {
  Harness h(
      "layer { name: 'bn' type: 'BatchNorm' }\n"
      "layer { name: 'sum' type: 'Add' bottom: 'bn' bottom: 'data' }\n"
      "layer { name: 'relu' type: 'ReLU' }\n"
      "layer { name: 'u' type: 'Tanh' bottom: 'relu' }\n"
      "layer { name: 'v' type: 'Sigmoid' bottom: 'relu' }\n"
      "layer { name: 'w' type: 'Add' bottom: 'u' bottom: 'v' bottom: 'relu' }",
      {4, 1, 5, 6}, {.pre = false});
  EXPECT_THAT(h.layer("sum").describe(), HasSubstr("ReLU gradient summing 3 branches"));
  EXPECT_THAT(h.layer("bn").describe(), HasSubstr("gradient sums taken"));
  set_affine(h, "bn", 1);
  h.loss();
  expect_gradients_match(h, {.eps = 1e-3, .input = false});
}

// The Add writes over its first bottom, which nothing reads after it; but
// not where a blocked layout pads the channels (3 of 8 or 16), which
// oneDNN 2.6's binary add gets wrong in place.
TEST(AddTest, WritesOverItsFirstBottomUnlessChannelsArePadded) {
  for (int channels : {16, 3}) {
    SCOPED_TRACE(channels);
    const std::string c = std::to_string(channels);
    Harness h("layer { name: 'conv' type: 'Convolution' convolution { num_output: " + c +
                  " kernel_size: 3 pad: 1 bias: false } }\n"
                  "layer { name: 'sum' type: 'Add' bottom: 'conv' bottom: 'pre' }\n"
                  "layer { name: 'relu' type: 'ReLU' }",
              {2, channels, 5, 5});
    const bool padded =
        h.layer("sum").describe().find("over its first bottom") == std::string::npos;
    const dnnl::memory::desc md = h.net().blob("conv").desc();
    EXPECT_EQ(padded, md.get_size() != static_cast<size_t>(2 * channels * 5 * 5) * sizeof(float))
        << h.layer("sum").describe();
    h.loss();
    expect_gradients_match(h);
  }
}

TEST(AddTest, ThreeBottomsOfDifferentLayouts) {
  // pre's top is blocked, the pooled one is too, the flattened-then-... use
  // an L2Normalize to get a plain 4-d bottom.
  const dims input{2, 3, 3, 3};
  Harness h(
      "layer { name: 'a' type: 'AvgPool' pooling { kernel_size: 1 } }\n"
      "layer { name: 'b' type: 'L2Normalize' bottom: 'pre' }\n"
      "layer { name: 'c' type: 'Sigmoid' bottom: 'pre' }\n"
      "layer { name: 'sum' type: 'Add' bottom: 'a' bottom: 'b' bottom: 'c' }",
      input);
  h.loss();
  const auto a = h.data("a"), b = h.data("b"), c = h.data("c");
  std::vector<float> want(a.size());
  for (size_t i = 0; i < a.size(); ++i) want[i] = a[i] + b[i] + c[i];
  expect_near_all(h.data("sum"), want, 1e-6, "sum");
  expect_gradients_match(h);
}

TEST(AddTest, ShapeMismatchNamesTheLayerAndBothShapes) {
  try {
    Harness h(
        "layer { name: 'conv' type: 'Convolution' convolution { num_output: 5 kernel_size: 1 } }\n"
        "layer { name: 'sum' type: 'Add' bottom: 'pre' bottom: 'conv' }",
        {2, 3, 4, 4});
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("layer 'sum' (Add)"));
    EXPECT_THAT(e.what(), HasSubstr("2x3x4x4"));
    EXPECT_THAT(e.what(), HasSubstr("2x5x4x4"));
  }
  EXPECT_THROW(Harness("layer { name: 'sum' type: 'Add' }", {2, 3, 4, 4}), UserError);
}

// ---- Concat -------------------------------------------------------------------

void expect_concat(Harness& h, const std::vector<std::string>& parts, const std::string& top) {
  h.loss();
  const dims d = h.dims(top);
  const int64_t n = d[0], hw = d[2] * d[3];
  std::vector<float> want;
  for (int64_t i = 0; i < n; ++i) {
    for (const std::string& p : parts) {
      const auto v = h.data(p);
      const int64_t per_sample = static_cast<int64_t>(v.size()) / n;
      want.insert(want.end(), v.begin() + i * per_sample, v.begin() + (i + 1) * per_sample);
    }
  }
  int64_t channels = 0;
  for (const std::string& p : parts) channels += h.dims(p)[1];
  EXPECT_EQ(d[1], channels);
  EXPECT_EQ(static_cast<int64_t>(want.size()), n * channels * hw);
  expect_near_all(h.data(top), want, 0, top);
}

TEST(ConcatTest, ChannelsNotMultiplesOfTheBlock) {
  Harness h(
      "layer { name: 'a' type: 'Convolution' convolution { num_output: 2 kernel_size: 3 pad: 1 } "
      "}\n"
      "layer { name: 'b' type: 'Convolution' bottom: 'pre' convolution { num_output: 5 "
      "kernel_size: 1 } }\n"
      "layer { name: 'cat' type: 'Concat' bottom: 'a' bottom: 'b' bottom: 'pre' }",
      {2, 3, 4, 4});
  expect_concat(h, {"a", "b", "pre"}, "cat");
  expect_gradients_match(h);
}

TEST(ConcatTest, BlockedInputsStayBlocked) {
  // 3x3 convolutions write nChw8c (nChw16c on AVX-512); the second part
  // starts at channel 16, a block boundary, and ends in a partial block.
  Harness h(
      "layer { name: 'a' type: 'Convolution' convolution { num_output: 16 kernel_size: 3 pad: 1 "
      "} }\n"
      "layer { name: 'b' type: 'Convolution' bottom: 'pre' convolution { num_output: 4 "
      "kernel_size: 3 pad: 1 } }\n"
      "layer { name: 'cat' type: 'Concat' bottom: 'a' bottom: 'b' }",
      {2, 3, 3, 3});
  EXPECT_THAT(h.layer("cat").describe(), ::testing::ContainsRegex("dst nChw(8|16)c"));
  expect_concat(h, {"a", "b"}, "cat");
  expect_gradients_match(h, {.max_entries = 24});
}

TEST(ConcatTest, TwoDInputs) {
  Harness h(
      "layer { name: 'a' type: 'InnerProduct' inner_product { num_output: 3 } }\n"
      "layer { name: 'b' type: 'InnerProduct' bottom: 'pre' inner_product { num_output: 4 } }\n"
      "layer { name: 'cat' type: 'Concat' bottom: 'a' bottom: 'b' }",
      {3, 2, 2, 2});
  h.loss();
  const auto a = h.data("a"), b = h.data("b");
  std::vector<float> want;
  for (size_t i = 0; i < 3; ++i) {
    want.insert(want.end(), a.begin() + static_cast<long>(i * 3),
                a.begin() + static_cast<long>(i * 3 + 3));
    want.insert(want.end(), b.begin() + static_cast<long>(i * 4),
                b.begin() + static_cast<long>(i * 4 + 4));
  }
  expect_near_all(h.data("cat"), want, 0, "cat");
  expect_gradients_match(h);
}

TEST(ConcatTest, MismatchedSpatialDimsAreAUserError) {
  try {
    Harness h(
        "layer { name: 'pool' type: 'MaxPool' pooling { kernel_size: 2 } }\n"
        "layer { name: 'cat' type: 'Concat' bottom: 'pre' bottom: 'pool' }",
        {2, 3, 4, 4});
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("layer 'cat' (Concat)"));
    EXPECT_THAT(e.what(), HasSubstr("2x3x2x2"));
  }
}

// ---- L2Normalize --------------------------------------------------------------

std::vector<float> l2_normalize_ref(const std::vector<float>& x, int64_t n, double eps) {
  std::vector<float> y(x.size());
  const size_t k = x.size() / static_cast<size_t>(n);
  for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
    double sq = 0;
    for (size_t j = 0; j < k; ++j) sq += static_cast<double>(x[i * k + j]) * x[i * k + j];
    const double norm = std::max(std::sqrt(sq), eps);
    for (size_t j = 0; j < k; ++j) y[i * k + j] = static_cast<float>(x[i * k + j] / norm);
  }
  return y;
}

TEST(L2NormalizeTest, AfterFlatten) {
  Harness h(
      "layer { name: 'flat' type: 'Flatten' }\n"
      "layer { name: 'l2' type: 'L2Normalize' }",
      {3, 2, 3, 3});
  h.loss();
  expect_near_all(h.data("l2"), l2_normalize_ref(h.input(), 3, 1e-12), kFwdTol, "l2");
  expect_gradients_match(h);
}

TEST(L2NormalizeTest, FourDInputIsNormalizedOverAllFeatures) {
  Harness h("layer { name: 'l2' type: 'L2Normalize' }", {2, 3, 2, 3});
  h.loss();
  expect_near_all(h.data("l2"), l2_normalize_ref(h.input(), 2, 1e-12), kFwdTol, "l2");
  expect_gradients_match(h);
}

TEST(L2NormalizeTest, ClampedNormIsLinear) {
  // With eps above every sample's norm, y = x / eps.
  Harness h("layer { name: 'l2' type: 'L2Normalize' l2_normalize { eps: 50 } }", {2, 3, 2, 2});
  h.loss();
  expect_near_all(h.data("l2"), l2_normalize_ref(h.input(), 2, 50), kFwdTol, "l2");
  expect_gradients_match(h);
}

// ---- SoftmaxCrossEntropy ------------------------------------------------------

class SoftmaxCrossEntropyTest : public ::testing::TestWithParam<float> {};

TEST_P(SoftmaxCrossEntropyTest, LossMatchesReferenceAndGradientsMatchFiniteDifferences) {
  const float smoothing = GetParam();
  Harness h("", {4, 3, 2, 2},
            {.classes = 5, .loss = "loss { label_smoothing: " + std::to_string(smoothing) + " }"});
  const double loss = h.loss();
  EXPECT_NEAR(loss, layer_test::softmax_cross_entropy_ref(h.data("head"), h.labels(), 5, smoothing),
              1e-5);
  expect_gradients_match(h);
}

INSTANTIATE_TEST_SUITE_P(Smoothing, SoftmaxCrossEntropyTest, ::testing::Values(0.f, 0.1f, 0.3f));

// ---- Errors a user can cause --------------------------------------------------

std::string error_of(const std::string& layers, const dims& input = {2, 3, 4, 4}) {
  try {
    Harness h(layers, input);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(LayerErrorsTest, UnknownTypeNamesTheLayerAndListsTheKnownTypes) {
  const std::string e = error_of("layer { name: 'mystery' type: 'Convolutoin' }");
  EXPECT_THAT(e, HasSubstr("layer 'mystery'"));
  EXPECT_THAT(e, HasSubstr("unknown type 'Convolutoin'"));
  for (const char* known :
       {"Convolution", "BatchNorm", "Dropout", "Flatten", "Add", "Concat", "L2Normalize"}) {
    EXPECT_THAT(e, HasSubstr(known));
  }
  EXPECT_THAT(error_of("layer { name: 'split' type: 'Split' }"), HasSubstr("unknown type 'Split'"));
}

TEST(LayerErrorsTest, InnerProductInputCountMismatchNamesTheLayer) {
  const std::string e = error_of(
      "layer { name: 'fc1' type: 'InnerProduct' inner_product { num_output: 4 num_input: 40 } }");
  EXPECT_THAT(e, HasSubstr("layer 'fc1' (InnerProduct)"));
  EXPECT_THAT(e, HasSubstr("40"));
  EXPECT_THAT(e, HasSubstr("48"));
}

TEST(LayerErrorsTest, ConvolutionGroupMustDivideChannels) {
  const std::string e = error_of(
      "layer { name: 'gconv' type: 'Convolution' convolution { num_output: 4 kernel_size: 1 "
      "group: 2 } }");
  EXPECT_THAT(e, HasSubstr("layer 'gconv' (Convolution)"));
  EXPECT_THAT(e, HasSubstr("group 2"));
}

TEST(LayerErrorsTest, BadLayerOptions) {
  EXPECT_THAT(error_of("layer { name: 'bn' type: 'BatchNorm' batch_norm { eps: 0 } }"),
              HasSubstr("layer 'bn' (BatchNorm)"));
  EXPECT_THAT(error_of("layer { name: 'bn' type: 'BatchNorm' batch_norm { momentum: 2 } }"),
              HasSubstr("momentum"));
  EXPECT_THAT(error_of("layer { name: 'l2' type: 'L2Normalize' l2_normalize { eps: -1 } }"),
              HasSubstr("layer 'l2' (L2Normalize)"));
  EXPECT_THAT(error_of("layer { name: 'cat' type: 'Concat' }"),
              HasSubstr("takes 2 or more bottoms"));
}

// ---- Implementations for a LeNet ----------------------------------------------

TEST(LeNetTest, PrimitivesAreOptimizedImplementations) {
  const std::string layers = R"pb(
    layer {
      name: "conv1"
      type: "Convolution"
      convolution { num_output: 6 kernel_size: 5 pad: 2 }
    }
    layer { name: "bn1" type: "BatchNorm" }
    layer { name: "relu1" type: "ReLU" }
    layer {
      name: "pool1"
      type: "MaxPool"
      pooling { kernel_size: 2 }
    }
    layer {
      name: "conv2"
      type: "Convolution"
      convolution { num_output: 16 kernel_size: 5 }
    }
    layer { name: "relu2" type: "ReLU" }
    layer {
      name: "pool2"
      type: "AvgPool"
      pooling { kernel_size: 2 }
    }
    layer { name: "flat" type: "Flatten" }
    layer {
      name: "fc1"
      type: "InnerProduct"
      inner_product { num_output: 120 }
    }
    layer { name: "relu3" type: "ReLU" }
    layer { name: "drop" type: "Dropout" }
    layer {
      name: "fc2"
      type: "InnerProduct"
      inner_product { num_output: 84 }
    }
    layer { name: "relu4" type: "ReLU" }
  )pb";
  Harness h(layers, {8, 1, 28, 28}, {.classes = 10});
  h.forward_backward();
  const std::string summary = h.net().summary();
  for (const auto& l : h.net().layers()) {
    const std::string d = l->describe();
    SCOPED_TRACE(l->name() + ": " + d);
    EXPECT_THAT(d, ::testing::Not(HasSubstr("ref"))) << summary;
    const std::string t = l->type();
    if (t == "Convolution" || t == "InnerProduct" || t == "MaxPool" || t == "AvgPool" ||
        t == "BatchNorm") {
      // brgemm kernels are generated at run time too.
      EXPECT_THAT(d, ::testing::AnyOf(HasSubstr("jit"), HasSubstr("brgemm"))) << summary;
    }
  }
}

}  // namespace
}  // namespace dptrain

namespace dptrain {
namespace {

TEST(ShippedConfigsTest, EveryLayerOfEveryShippedNetRunsAnOptimizedImplementation) {
  // What DNNL_VERBOSE would show: no reference kernel anywhere (each
  // layer's describe() names the implementations its primitives chose).
  int nets = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(DPTRAIN_SOURCE_DIR) + "/configs")) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() != ".textproto" || name.rfind("sweep_", 0) == 0) continue;
    const TrainSpec spec = load_train_spec(entry.path().string());
    // The shipped configs read 28 x 28 Fashion-MNIST, or synthetic images
    // of their own shape (the 224 x 224 nets, at a small batch).
    const SyntheticData& s = spec.data().synthetic();
    const bool synthetic = spec.data().format() == DataSpec::SYNTHETIC;
    const dims input =
        synthetic ? dims{2, s.channels(), s.height(), s.width()} : dims{8, 1, 28, 28};
    // In fp32 everywhere, and a bf16 config also in bf16 where the CPU has it.
    for (const Precision p : {FP32, BF16}) {
      if (p == BF16 && (spec.precision() != BF16 || !has_bf16())) continue;
      Net net(spec.net(), input, spec.seed(), nullptr, Net::BlobMemory::kReuse, 1, p);
      for (const auto& l : net.layers()) {
        EXPECT_THAT(l->describe(), ::testing::Not(HasSubstr("ref")))
            << name << " (" << Precision_Name(p) << "): " << l->name();
      }
    }
    ++nets;
  }
  EXPECT_GE(nets, 15);
}

}  // namespace
}  // namespace dptrain
