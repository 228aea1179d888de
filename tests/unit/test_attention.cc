// The parts attention blocks are written with: global pooling, the mean
// and maximum over channels, and the broadcast multiply, each against a
// naive reference and central finite differences; and a squeeze-and-
// excitation block and CBAM's two attentions composed from them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "core/error.h"
#include "tests/unit/layer_test_util.h"

namespace dptrain {
namespace {

using layer_test::expect_gradients_match;
using layer_test::expect_near_all;
using layer_test::Harness;
using ::testing::HasSubstr;
using dims = dnnl::memory::dims;

// x (N, C, H, W) reduced over H and W, or over C.
std::vector<float> reduce_ref(const std::vector<float>& x, const dims& d, bool over_channels,
                              bool max) {
  const int64_t n = d[0], c = d[1], hw = d[2] * d[3];
  std::vector<float> y;
  for (int64_t i = 0; i < n; ++i) {
    if (over_channels) {
      for (int64_t p = 0; p < hw; ++p) {
        double acc = max ? -1e30 : 0;
        for (int64_t k = 0; k < c; ++k) {
          const double v = x[static_cast<size_t>((i * c + k) * hw + p)];
          acc = max ? std::max(acc, v) : acc + v / static_cast<double>(c);
        }
        y.push_back(static_cast<float>(acc));
      }
    } else {
      for (int64_t k = 0; k < c; ++k) {
        double acc = max ? -1e30 : 0;
        for (int64_t p = 0; p < hw; ++p) {
          const double v = x[static_cast<size_t>((i * c + k) * hw + p)];
          acc = max ? std::max(acc, v) : acc + v / static_cast<double>(hw);
        }
        y.push_back(static_cast<float>(acc));
      }
    }
  }
  return y;
}

class ReductionTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ReductionTest, ForwardMatchesReferenceAndGradientsMatchFiniteDifferences) {
  const std::string type = GetParam();
  // 16 and 20 channels: the input reaches the layer in a blocked layout
  // (20: its last block padded).
  for (const dims& input : {dims{2, 3, 4, 5}, dims{2, 16, 3, 3}, dims{2, 20, 3, 3}}) {
    Harness h("layer { name: 'r' type: '" + type + "' }", input);
    h.loss();
    const bool over_channels = type.rfind("Channel", 0) == 0;
    const bool max = type.find("Max") != std::string::npos;
    EXPECT_EQ(h.dims("r"), over_channels ? (dims{input[0], 1, input[2], input[3]})
                                         : (dims{input[0], input[1], 1, 1}));
    expect_near_all(h.data("r"), reduce_ref(h.data("pre"), input, over_channels, max), 1e-5, type);
    expect_gradients_match(h);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, ReductionTest,
                         ::testing::Values("GlobalAvgPool", "GlobalMaxPool", "ChannelMean",
                                           "ChannelMax"));

TEST(Mul, BroadcastsEitherBottomAndGivesBothTheirGradients) {
  // Channel weights (N x C x 1 x 1) and a spatial map (N x 1 x H x W),
  // each as the first and as the second bottom; 20 channels arrive
  // channel-blocked (the last block padded).
  for (const int64_t channels : {3, 20}) {
    for (const char* small : {"GlobalAvgPool", "ChannelMax"}) {
      for (bool small_first : {false, true}) {
        const std::string order =
            small_first ? "bottom: 's' bottom: 'pre'" : "bottom: 'pre' bottom: 's'";
        Harness h("layer { name: 's' type: '" + std::string(small) +
                      "' bottom: 'pre' }\nlayer { name: 'm' type: 'Mul' " + order + " }",
                  {2, channels, 4, 4});
        h.loss();
        const std::vector<float> x = h.data("pre"), s = h.data("s"), y = h.data("m");
        const dims sd = h.dims("s");
        std::vector<float> want(x.size());
        for (int64_t n = 0; n < 2; ++n)
          for (int64_t c = 0; c < channels; ++c)
            for (int64_t p = 0; p < 16; ++p) {
              const int64_t at = (n * channels + c) * 16 + p;
              const int64_t sat = sd[1] == 1 ? n * 16 + p : n * channels + c;
              want[static_cast<size_t>(at)] =
                  x[static_cast<size_t>(at)] * s[static_cast<size_t>(sat)];
            }
        const std::string what = std::string(small) + (small_first ? " first, " : " second, ") +
                                 std::to_string(channels) + " channels";
        EXPECT_EQ(h.dims("m"), (dims{2, channels, 4, 4})) << what;
        expect_near_all(y, want, 1e-5, what);
        expect_gradients_match(h);
      }
    }
  }
}

TEST(Mul, RefusesShapesThatDoNotBroadcast) {
  auto error = [](const std::string& layers) {
    try {
      Harness h(layers, {2, 3, 4, 4});
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_THAT(error("layer { name: 'p' type: 'MaxPool' pooling { kernel_size: 2 } bottom: 'pre' }\n"
                    "layer { name: 'm' type: 'Mul' bottom: 'pre' bottom: 'p' }"),
              HasSubstr("cannot multiply 2x3x4x4 by 2x3x2x2"));
  // Neither has the output's shape.
  EXPECT_THAT(error("layer { name: 'a' type: 'GlobalAvgPool' bottom: 'pre' }\n"
                    "layer { name: 'b' type: 'ChannelMean' bottom: 'pre' }\n"
                    "layer { name: 'm' type: 'Mul' bottom: 'a' bottom: 'b' }"),
              HasSubstr("one must have the other's sizes"));
}

TEST(Attention, SqueezeExcitationAndCbamBlocksTrainAsLayersCompose) {
  // Channel attention: an MLP (1x1 convolutions) on the average- and the
  // max-pooled features, summed, through a sigmoid; spatial attention: a
  // convolution over [mean over channels, max over channels].
  const std::string cbam = R"pb(
    layer { name: "avg" type: "GlobalAvgPool" bottom: "pre" }
    layer { name: "max" type: "GlobalMaxPool" bottom: "pre" }
    layer {
      name: "mlp_a"
      type: "Convolution"
      bottom: "avg"
      convolution { num_output: 4 kernel_size: 1 }
    }
    layer { name: "relu_a" type: "ReLU" }
    layer {
      name: "out_a"
      type: "Convolution"
      convolution { num_output: 4 kernel_size: 1 }
    }
    layer {
      name: "mlp_m"
      type: "Convolution"
      bottom: "max"
      convolution { num_output: 4 kernel_size: 1 }
    }
    layer { name: "relu_m" type: "ReLU" }
    layer {
      name: "out_m"
      type: "Convolution"
      convolution { num_output: 4 kernel_size: 1 }
    }
    layer { name: "sum" type: "Add" bottom: "out_a" bottom: "out_m" }
    layer { name: "gate" type: "Sigmoid" }
    layer { name: "channel" type: "Mul" bottom: "pre" bottom: "gate" }
    layer { name: "cmean" type: "ChannelMean" bottom: "channel" }
    layer { name: "cmax" type: "ChannelMax" bottom: "channel" }
    layer { name: "both" type: "Concat" bottom: "cmean" bottom: "cmax" }
    layer {
      name: "spatial"
      type: "Convolution"
      convolution { num_output: 1 kernel_size: 3 pad: 1 }
    }
    layer { name: "sgate" type: "Sigmoid" }
    layer { name: "out" type: "Mul" bottom: "channel" bottom: "sgate" }
  )pb";
  Harness h(cbam, {2, 4, 5, 5});
  h.loss();
  EXPECT_EQ(h.dims("out"), (dims{2, 4, 5, 5}));
  expect_gradients_match(h);
}

}  // namespace
}  // namespace dptrain
