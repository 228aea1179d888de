// What autoencoders are built from: the transposed convolution against a
// naive reference (stride, padding, output padding, dilation, groups) and
// central finite differences, and the MSE and L1 reconstruction losses
// against their definitions, with a target that needs a gradient too.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "tests/unit/layer_test_util.h"

namespace dptrain {
namespace {

using layer_test::expect_gradients_match;
using layer_test::expect_near_all;
using layer_test::Harness;
using layer_test::Shape;
using layer_test::shape_of;
using ::testing::HasSubstr;
using dims = dnnl::memory::dims;

struct DeconvCase {
  std::string name;
  dims input;
  int64_t oc, k, stride = 1, pad = 0, out_pad = 0, dilation = 1, group = 1;
  bool bias = true;
};

void PrintTo(const DeconvCase& c, std::ostream* os) { *os << c.name; }

// Each input pixel scatters its kernel onto the output: y[o at
// iy * s - pad + ky * d] += x[i at iy] * w[i][o][ky][kx], with w stored as
// (in, out / group, k, k).
std::vector<float> deconv_ref(const std::vector<float>& x, const Shape& in,
                              const std::vector<float>& w, const std::vector<float>& b,
                              const DeconvCase& p, Shape* out) {
  const int64_t span = (p.k - 1) * p.dilation + 1;
  *out = {in.n, p.oc, (in.h - 1) * p.stride - 2 * p.pad + span + p.out_pad,
          (in.w - 1) * p.stride - 2 * p.pad + span + p.out_pad};
  const int64_t icg = in.c / p.group, ocg = p.oc / p.group;
  std::vector<double> y(static_cast<size_t>(out->size()), 0.0);
  for (int64_t n = 0; n < in.n; ++n)
    for (int64_t o = 0; o < p.oc; ++o)
      for (int64_t oy = 0; oy < out->h; ++oy)
        for (int64_t ox = 0; ox < out->w; ++ox)
          y[out->at(n, o, oy, ox)] = b.empty() ? 0.0 : b[static_cast<size_t>(o)];
  for (int64_t n = 0; n < in.n; ++n) {
    for (int64_t i = 0; i < in.c; ++i) {
      const int64_t g = i / icg;
      for (int64_t iy = 0; iy < in.h; ++iy) {
        for (int64_t ix = 0; ix < in.w; ++ix) {
          for (int64_t ol = 0; ol < ocg; ++ol) {
            for (int64_t ky = 0; ky < p.k; ++ky) {
              for (int64_t kx = 0; kx < p.k; ++kx) {
                const int64_t oy = iy * p.stride - p.pad + ky * p.dilation;
                const int64_t ox = ix * p.stride - p.pad + kx * p.dilation;
                if (oy < 0 || oy >= out->h || ox < 0 || ox >= out->w) continue;
                y[out->at(n, g * ocg + ol, oy, ox)] +=
                    static_cast<double>(x[in.at(n, i, iy, ix)]) *
                    w[static_cast<size_t>(((i * ocg + ol) * p.k + ky) * p.k + kx)];
              }
            }
          }
        }
      }
    }
  }
  return {y.begin(), y.end()};
}

class DeconvolutionTest : public ::testing::TestWithParam<DeconvCase> {};

TEST_P(DeconvolutionTest, ForwardMatchesReferenceAndGradientsMatchFiniteDifferences) {
  const DeconvCase& c = GetParam();
  const std::string layer =
      "layer { name: 'up' type: 'Deconvolution' convolution { num_output: " + std::to_string(c.oc) +
      " kernel_size: " + std::to_string(c.k) + " stride: " + std::to_string(c.stride) +
      " pad: " + std::to_string(c.pad) + " output_pad: " + std::to_string(c.out_pad) +
      " dilation: " + std::to_string(c.dilation) + " group: " + std::to_string(c.group) +
      " bias: " + (c.bias ? "true" : "false") + " } }";
  Harness h(layer, c.input);
  if (c.bias) {
    std::vector<float> b(static_cast<size_t>(c.oc));
    for (size_t i = 0; i < b.size(); ++i) b[i] = 0.1f * static_cast<float>(i) - 0.2f;
    h.set_weight("up.bias", b);
  }
  auto w = h.weights();
  // Weight files hold (in, out / group, k, k) and (out), as PyTorch does.
  const WeightsFile file = h.net().params().export_weights();
  for (const NamedTensor& t : file.tensor()) {
    const std::vector<int64_t> d(t.dims().begin(), t.dims().end());
    if (t.name() == "up.weight") {
      EXPECT_EQ(d, (std::vector<int64_t>{c.input[1], c.oc / c.group, c.k, c.k}));
    }
    if (t.name() == "up.bias") {
      EXPECT_EQ(d, (std::vector<int64_t>{c.oc}));
    }
  }
  h.loss();
  Shape out;
  const auto want = deconv_ref(h.input(), shape_of(c.input), w["up.weight"],
                               c.bias ? w["up.bias"] : std::vector<float>(), c, &out);
  EXPECT_EQ(h.dims("up"), (dims{out.n, out.c, out.h, out.w}));
  expect_near_all(h.data("up"), want, 1e-4, "up");
  expect_gradients_match(h);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DeconvolutionTest,
    ::testing::Values(DeconvCase{"basic3x3", {2, 3, 4, 4}, 4, 3},
                      DeconvCase{"stride2pad1", {2, 3, 4, 3}, 5, 3, 2, 1},
                      DeconvCase{"stride2outpad1", {2, 2, 3, 3}, 3, 3, 2, 1, 1},
                      DeconvCase{"kernel4stride2", {2, 2, 3, 3}, 3, 4, 2, 1},
                      DeconvCase{"dilation2", {2, 2, 3, 3}, 2, 3, 1, 1, 0, 2},
                      DeconvCase{"groups2", {2, 4, 3, 3}, 6, 3, 2, 1, 1, 1, 2},
                      DeconvCase{"no_bias", {2, 3, 4, 4}, 4, 3, 2, 0, 0, 1, 1, false}),
    [](const auto& tp) { return tp.param.name; });

TEST(Deconvolution, BadOptionsNameTheLayer) {
  auto error = [](const std::string& options) {
    try {
      Harness h("layer { name: 'up' type: 'Deconvolution' convolution { " + options + " } }",
                {2, 4, 3, 3});
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_THAT(error("num_output: 2 kernel_size: 3 stride: 2 pad: 1 output_pad: 2"),
              HasSubstr("convolution.output_pad 2"));
  EXPECT_THAT(error("num_output: 3 kernel_size: 3 group: 2"), HasSubstr("group 2 must divide"));
  EXPECT_THAT(error("num_output: 2 kernel_size: 1 pad: 2"), HasSubstr("leaves no output"));
  EXPECT_THAT(error("num_output: 2 kernel_size: 3"), HasSubstr("(no error)"));
}

// ---- Reconstruction losses ---------------------------------------------------

class ReconstructionLossTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReconstructionLossTest, LossMatchesItsDefinitionAndGradientsMatchFiniteDifferences) {
  // The output ('head') against a target ('tgt') that has parameters of its
  // own: both gradients are checked.
  Harness h("layer { name: 'tgt' type: 'InnerProduct' inner_product { num_output: 5 } }",
            {4, 2, 2, 2},
            {.loss = "bottom: 'head' bottom: 'tgt'", .loss_type = GetParam(), .outputs = 5});
  const double loss = h.loss();
  const std::vector<float> out = h.data("head"), target = h.data("tgt");
  double want = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double d = static_cast<double>(out[i]) - target[i];
    want += GetParam() == "MSELoss" ? d * d : std::abs(d);
  }
  EXPECT_NEAR(loss, want / static_cast<double>(out.size()), 1e-6);
  // The scores: each sample's squared error per channel (5 channels of 1).
  const LossLayer& l = h.net().loss_layer();
  EXPECT_EQ(l.kind(), LossLayer::Kind::kReconstruction);
  ASSERT_EQ(l.score_width(), 5);
  for (size_t i = 0; i < out.size(); ++i) {
    const double sq = std::pow(out[i] - target[i], 2);
    EXPECT_NEAR(l.scores()[i], sq, 1e-6 * (1 + sq)) << i;
  }
  expect_gradients_match(h);
}

INSTANTIATE_TEST_SUITE_P(Losses, ReconstructionLossTest, ::testing::Values("MSELoss", "L1Loss"));

TEST(ReconstructionLoss, ReadsTheInputImageUnlessToldAndNeedsItsShape) {
  // An autoencoder in miniature: 1x1 convolution back to the input's shape.
  NetSpec spec = layer_test::parse_net(
      "layer { name: 'enc' type: 'Convolution' convolution { num_output: 3 kernel_size: 1 } }\n"
      "layer { name: 'loss' type: 'MSELoss' }");
  Net net(spec, {2, 3, 2, 2}, 1);
  // (Through a Split: the convolution reads "data" too.)
  EXPECT_THAT(net.loss_layer().bottom_names(),
              ::testing::ElementsAre("enc", ::testing::StartsWith("data/split")));
  const NetSpec wrong = layer_test::parse_net(
      "layer { name: 'enc' type: 'Convolution' convolution { num_output: 2 kernel_size: 1 } }\n"
      "layer { name: 'loss' type: 'L1Loss' }");
  try {
    Net bad(wrong, {2, 3, 2, 2}, 1);
    ADD_FAILURE() << "a 2-channel output against a 3-channel image was accepted";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(),
                HasSubstr("the output 'enc' is 2x2x2x2 but the target 'data' is 2x3x2x2"));
  }
}

}  // namespace
}  // namespace dptrain
