// The net's memory plan: blobs whose lifetimes in a step do not overlap
// share bytes, and BatchNorm's backward runs in place. A net that reuses
// bytes must compute exactly what one that keeps every blob computes, over
// branches (Split, Add, Concat), residual blocks whose Adds share their
// gradients and sum their branches' in the ReLU's, activations fused and
// standalone, pooling, dropout and both BatchNorm paths.
#include <gtest/gtest.h>
#include <omp.h>

#include <map>
#include <string>
#include <vector>

#include "layer_test_util.h"

namespace dptrain {
namespace {

using dnnl::memory;
using layer_test::distinct_values;
using layer_test::param_grad;
using layer_test::parse_net;

constexpr const char* kBranchy = R"pb(
  layer {
    name: "conv1"
    type: "Convolution"
    convolution { num_output: 8 kernel_size: 3 pad: 1 }
  }
  layer { name: "bn1" type: "BatchNorm" }
  layer { name: "relu1" type: "ReLU" }
  layer {
    name: "a"
    type: "Convolution"
    bottom: "relu1"
    convolution { num_output: 8 kernel_size: 3 pad: 1 }
  }
  layer {
    name: "b"
    type: "Convolution"
    bottom: "relu1"
    convolution { num_output: 8 kernel_size: 1 }
  }
  layer { name: "sum" type: "Add" bottom: "a" bottom: "b" bottom: "relu1" }
  layer { name: "act" type: "Sigmoid" }
  layer { name: "cat" type: "Concat" bottom: "act" bottom: "b" }
  layer { name: "bn2" type: "BatchNorm" }
  layer {
    name: "pool"
    type: "MaxPool"
    pooling { kernel_size: 2 }
  }
  layer {
    name: "c3"
    type: "Convolution"
    convolution { num_output: 16 kernel_size: 1 bias: false }
  }
  layer { name: "bn3" type: "BatchNorm" }
  layer { name: "res" type: "Add" bottom: "bn3" bottom: "pool" }
  layer { name: "res_relu" type: "ReLU" }
  layer {
    name: "c4"
    type: "Convolution"
    convolution { num_output: 16 kernel_size: 1 }
  }
  layer { name: "res2" type: "Add" bottom: "c4" bottom: "res_relu" }
  layer { name: "tanh" type: "Tanh" }
  layer {
    name: "avg"
    type: "AvgPool"
    pooling { kernel_size: 2 }
  }
  layer { name: "drop" type: "Dropout" }
  layer {
    name: "fc1"
    type: "InnerProduct"
    inner_product { num_output: 16 }
  }
  layer { name: "relu2" type: "ReLU" }
  layer {
    name: "fc2"
    type: "InnerProduct"
    inner_product { num_output: 5 }
  }
  layer { name: "loss" type: "SoftmaxCrossEntropy" }
)pb";

struct Step {
  float loss = 0;
  std::map<std::string, std::vector<float>> grads;
};

Step train_steps(Net& net, int steps) {
  const memory::dims dims = net.input_dims();
  const auto x = distinct_values(static_cast<size_t>(dims[0] * dims[1] * dims[2] * dims[3]), 5);
  std::vector<int32_t> labels(static_cast<size_t>(dims[0]));
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int32_t>(i % 5);
  net.set_input(x.data(), labels.data(), dims[0]);
  Step out;
  for (int s = 0; s < steps; ++s) {
    net.state().step = s;
    net.forward(true);
    net.backward();
  }
  out.loss = net.loss_layer().loss();
  for (const auto& p : net.params().params()) out.grads[p->name] = param_grad(net, p->name);
  return out;
}

class NetMemoryTest : public ::testing::TestWithParam<bool> {};

TEST_P(NetMemoryTest, ReusedBytesComputeExactlyWhatKeptBlobsDo) {
  // One thread: results are then bitwise reproducible between the two nets.
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  std::string text = kBranchy;
  if (GetParam()) {
    // The synchronized path reads the BatchNorm output in backward.
    for (const char* bn : {"\"bn1\" type: \"BatchNorm\"", "\"bn2\" type: \"BatchNorm\""}) {
      const std::string from = bn;
      text.replace(text.find(from), from.size(), from + " batch_norm { sync: true }");
    }
  }
  const NetSpec spec = parse_net(text);
  const memory::dims dims = {4, 3, 8, 8};
  Net kept(spec, dims, 3, nullptr, Net::BlobMemory::kKeepAll);
  Net reused(spec, dims, 3, nullptr, Net::BlobMemory::kReuse);
  // Two steps: the second must not read anything the first left behind.
  const Step a = train_steps(kept, 2);
  const Step b = train_steps(reused, 2);
  omp_set_num_threads(saved);

  EXPECT_EQ(a.loss, b.loss);
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (const auto& [name, grad] : a.grads) EXPECT_EQ(grad, b.grads.at(name)) << name;
  EXPECT_LT(reused.arena_bytes(), kept.arena_bytes() * 3 / 4) << reused.summary();
  EXPECT_NE(reused.summary().find("ReLU gradient summing 2 branches"), std::string::npos)
      << reused.summary();
}

INSTANTIATE_TEST_SUITE_P(SyncBatchNorm, NetMemoryTest, ::testing::Bool());

TEST(NetMemoryTest, ChainNeedsLittleMoreThanItsValuesForBackward) {
  // conv -> BN+ReLU -> max pool -> fc: the BN output is read by no backward
  // (the pooling keeps its workspace), so its bytes serve the gradients; and
  // BN's input gradient overwrites its output gradient.
  const NetSpec spec = parse_net(R"pb(
    layer {
      name: "conv"
      type: "Convolution"
      convolution { num_output: 16 kernel_size: 3 pad: 1 }
    }
    layer { name: "bn" type: "BatchNorm" }
    layer { name: "relu" type: "ReLU" }
    layer {
      name: "pool"
      type: "MaxPool"
      pooling { kernel_size: 2 }
    }
    layer {
      name: "fc"
      type: "InnerProduct"
      inner_product { num_output: 4 }
    }
    layer { name: "loss" type: "SoftmaxCrossEntropy" }
  )pb");
  const memory::dims dims = {8, 1, 16, 16};
  const Net net(spec, dims, 1);
  const size_t map = 8 * 16 * 16 * 16 * sizeof(float);  // one 16-channel 16x16 map of the batch
  // Held: the conv output (BN's backward reads it) and the pooled map, the
  // pooled map's gradient, and one full map for the BN output in forward
  // and the shared gradient of BN in backward; 4.5 maps without reuse.
  EXPECT_LE(net.arena_bytes(), 2 * map + 2 * (map / 4) + 16 * 1024) << net.summary();
}

// The work FLOP/s figures count: multiply-adds of convolutions (grouped,
// strided), transposed convolutions and inner products, forward and
// backward; the first layer, whose bottom is the data, has no
// backward-data.
TEST(NetWork, CountsTheMultiplyAddsOfEveryConvolutionAndInnerProduct) {
  const NetSpec spec = parse_net(R"pb(
    layer {
      name: "c1"
      type: "Convolution"
      convolution { num_output: 4 kernel_size: 3 pad: 1 }
    }
    layer {
      name: "c2"
      type: "Convolution"
      convolution { num_output: 8 kernel_size: 3 stride: 2 pad: 1 group: 2 }
    }
    layer {
      name: "up"
      type: "Deconvolution"
      convolution { num_output: 2 kernel_size: 2 stride: 2 }
    }
    layer {
      name: "pool"
      type: "MaxPool"
      pooling { kernel_size: 2 }
    }
    layer {
      name: "fc"
      type: "InnerProduct"
      inner_product { num_output: 10 }
    }
    layer { name: "loss" type: "SoftmaxCrossEntropy" }
  )pb");
  const Net net(spec, {2, 1, 8, 8}, 1);
  const int64_t c1 = 2 * 8 * 8 * 4 * 1 * 9;  // N x OH x OW x OC x IC x K x K
  const int64_t c2 = 2 * 4 * 4 * 8 * 2 * 9;  // IC per group: 2
  const int64_t up = 2 * 4 * 4 * 8 * 2 * 4;  // N x IH x IW x IC x OC x K x K
  const int64_t fc = 2 * (2 * 4 * 4) * 10;   // N x inputs x outputs
  const Layer::Work w = net.work();
  EXPECT_EQ(w.forward, c1 + c2 + up + fc);
  EXPECT_EQ(w.backward, c1 + 2 * (c2 + up + fc));
}

}  // namespace
}  // namespace dptrain
