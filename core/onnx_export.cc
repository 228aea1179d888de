#include "core/onnx_export.h"

#include <map>
#include <set>
#include <vector>

#include "core/error.h"
#include "core/layer.h"
#include "core/net.h"
#include "core/onnx.pb.h"

namespace dptrain {
namespace {

constexpr int64_t kIrVersion = 7;
constexpr int64_t kOpset = 13;

class Graph {
 public:
  Graph(onnx::GraphProto* graph, const WeightsFile& weights) : graph_(graph) {
    for (const NamedTensor& t : weights.tensor()) tensors_[t.name()] = &t;
    // The graph's own names win; a blob of the same name is renamed.
    for (const char* name :
         {"pixels", "data", "data.mean", "data.std", "data.centred", "probabilities", "probability",
          "embedding", "reconstruction", "reconstruction.scaled"}) {
      used_.insert(name);
    }
  }

  // `name`, or name_1, name_2, ... if a value of that name exists (ONNX
  // graphs assign every value once).
  std::string fresh(const std::string& name) {
    std::string candidate = name;
    for (int k = 1; !used_.insert(candidate).second; ++k)
      candidate = name + "_" + std::to_string(k);
    return candidate;
  }

  onnx::NodeProto* node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::string& output) {
    onnx::NodeProto* n = graph_->add_node();
    n->set_op_type(op);
    n->set_name(output);
    for (const std::string& in : inputs) n->add_input(in);
    n->add_output(output);
    return n;
  }

  // An initializer from final_weights: `layer.suffix`, its dims as stored.
  std::string weight(const LayerSpec& layer, const std::string& suffix) {
    const std::string name = layer.name() + "." + suffix;
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      throw UserError("the weights hold no tensor " + name + " (layer '" + layer.name() + "', " +
                      layer.type() + ")");
    }
    onnx::TensorProto* t = graph_->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : it->second->dims()) t->add_dims(d);
    t->set_raw_data(it->second->data());  // little-endian float32, as ONNX's raw_data
    return name;
  }

  std::string constant(const std::string& name, const std::vector<float>& values,
                       const std::vector<int64_t>& dims) {
    onnx::TensorProto* t = graph_->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    for (float v : values) t->add_float_data(v);
    return name;
  }

 private:
  onnx::GraphProto* graph_;
  std::map<std::string, const NamedTensor*> tensors_;
  std::set<std::string> used_;
};

void ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& values) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a->add_ints(v);
}

void integer(onnx::NodeProto* n, const std::string& name, int64_t value) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}

void real(onnx::NodeProto* n, const std::string& name, float value) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(value);
}

void value_info(onnx::ValueInfoProto* v, const std::string& name, int64_t batch,
                const std::vector<int64_t>& dims) {
  v->set_name(name);
  onnx::TypeProto::Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  onnx::TensorShapeProto* shape = t->mutable_shape();
  if (batch > 0) {
    shape->add_dim()->set_dim_value(batch);
  } else {
    shape->add_dim()->set_dim_param("batch");
  }
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

// Per-channel constants broadcast over N x C x H x W.
std::vector<float> per_channel(int channels, float (Normalization::*of)(int) const,
                               const Normalization& norm) {
  std::vector<float> v;
  for (int c = 0; c < channels; ++c) v.push_back((norm.*of)(c));
  return v;
}

}  // namespace

std::string onnx_model_bytes(const NetSpec& net, const WeightsFile& weights,
                             const Normalization& norm, int channels, int height, int width,
                             const std::vector<int64_t>& output_dims, int64_t batch) {
  onnx::ModelProto model;
  model.set_ir_version(kIrVersion);
  model.set_producer_name("dptrain");
  model.set_model_version(1);
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpset);
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name(net.name().empty() ? std::string("dptrain") : net.name());
  Graph graph(g, weights);
  value_info(g->add_input(), "pixels", batch, {channels, height, width});

  const std::vector<int64_t> channel_dims = {1, channels, 1, 1};
  const std::vector<float> mean = per_channel(channels, &Normalization::mean_of, norm);
  const std::vector<float> std = per_channel(channels, &Normalization::std_of, norm);
  graph.constant("data.mean", mean, channel_dims);
  graph.constant("data.std", std, channel_dims);
  graph.node("Sub", {"pixels", "data.mean"}, "data.centred");
  graph.node("Div", {"data.centred", "data.std"}, "data");

  // Our blob names are the graph's value names, except where a layer
  // vanishes (Dropout) and its top stands for its bottom.
  std::map<std::string, std::string> value;
  value["data"] = "data";
  auto in = [&](const LayerSpec& l, int i) { return value.at(l.bottom(i)); };
  std::string output, output_name;
  for (const LayerSpec& l : resolve_layers(net)) {
    const std::string& type = l.type();
    const std::string top = graph.fresh(l.top());
    value[l.top()] = top;
    auto unary = [&](const std::string& op) { return graph.node(op, {in(l, 0)}, top); };
    if (type == "Convolution" || type == "Deconvolution") {
      const ConvolutionParam& p = l.convolution();
      std::vector<std::string> inputs = {in(l, 0), graph.weight(l, "weight")};
      if (p.bias()) inputs.push_back(graph.weight(l, "bias"));
      onnx::NodeProto* n =
          graph.node(type == "Convolution" ? "Conv" : "ConvTranspose", inputs, top);
      const int64_t k = p.kernel_size(), s = p.stride(), pad = p.pad(), d = p.dilation();
      ints(n, "kernel_shape", {k, k});
      ints(n, "strides", {s, s});
      // Symmetric pads: where ours drop the last rows, ONNX's floor does too.
      ints(n, "pads", {pad, pad, pad, pad});
      ints(n, "dilations", {d, d});
      integer(n, "group", p.group());
      if (type == "Deconvolution") ints(n, "output_padding", {p.output_pad(), p.output_pad()});
    } else if (type == "InnerProduct") {
      const std::string flat = graph.fresh(top + ".flat");
      graph.node("Flatten", {in(l, 0)}, flat);
      std::vector<std::string> inputs = {flat, graph.weight(l, "weight")};
      if (l.inner_product().bias()) inputs.push_back(graph.weight(l, "bias"));
      onnx::NodeProto* n = graph.node("Gemm", inputs, top);
      integer(n, "transB", 1);
    } else if (type == "BatchNorm") {
      onnx::NodeProto* n =
          graph.node("BatchNormalization",
                     {in(l, 0), graph.weight(l, "scale"), graph.weight(l, "shift"),
                      graph.weight(l, "running_mean"), graph.weight(l, "running_var")},
                     top);
      real(n, "epsilon", l.batch_norm().eps());
    } else if (type == "ReLU") {
      unary("Relu");
    } else if (type == "LeakyReLU") {
      real(unary("LeakyRelu"), "alpha",
           l.activation().has_alpha() ? l.activation().alpha() : 0.01f);
    } else if (type == "ELU") {
      real(unary("Elu"), "alpha", l.activation().has_alpha() ? l.activation().alpha() : 1.f);
    } else if (type == "Sigmoid" || type == "Tanh") {
      unary(type);
    } else if (type == "MaxPool" || type == "AvgPool") {
      const PoolingParam& p = l.pooling();
      onnx::NodeProto* n = unary(type == "MaxPool" ? "MaxPool" : "AveragePool");
      const int64_t k = p.kernel_size(), s = p.has_stride() ? p.stride() : k, pad = p.pad();
      ints(n, "kernel_shape", {k, k});
      ints(n, "strides", {s, s});
      ints(n, "pads", {pad, pad, pad, pad});
      if (type == "AvgPool") integer(n, "count_include_pad", p.exclude_padding() ? 0 : 1);
    } else if (type == "GlobalAvgPool") {
      unary("GlobalAveragePool");
    } else if (type == "GlobalMaxPool") {
      unary("GlobalMaxPool");
    } else if (type == "Flatten") {
      integer(unary("Flatten"), "axis", 1);
    } else if (type == "Add" || type == "Mul" || type == "Concat") {
      std::vector<std::string> inputs;
      for (int i = 0; i < l.bottom_size(); ++i) inputs.push_back(in(l, i));
      if (type == "Concat") {
        integer(graph.node("Concat", inputs, top), "axis", 1);
      } else if (type == "Mul" || inputs.size() <= 2) {
        graph.node(type, inputs, top);
      } else {
        graph.node("Sum", inputs, top);
      }
    } else if (type == "ChannelMean" || type == "ChannelMax") {
      onnx::NodeProto* n = unary(type == "ChannelMean" ? "ReduceMean" : "ReduceMax");
      ints(n, "axes", {1});
      integer(n, "keepdims", 1);
    } else if (type == "L2Normalize") {
      // x / ||x||: ours divides by max(||x||, eps), which differs only for
      // a vector of norm below eps (1e-12 by default). (OpenCV's dnn reads
      // neither LpNormalization nor a Max or Clip against a constant.)
      const std::string length = graph.fresh(top + ".norm");
      onnx::NodeProto* n = graph.node("ReduceL2", {in(l, 0)}, length);
      ints(n, "axes", {1});
      integer(n, "keepdims", 1);
      graph.node("Div", {in(l, 0), length}, top);
    } else if (type == "Dropout") {
      value[top] = in(l, 0);
    } else if (type == "SoftmaxCrossEntropy") {
      integer(graph.node("Softmax", {in(l, 0)}, "probabilities"), "axis", 1);
      output = "probabilities";
    } else if (type == "SigmoidCrossEntropy") {
      graph.node("Sigmoid", {in(l, 0)}, "probability");
      output = "probability";
    } else if (type == "TripletLoss") {
      graph.node("Identity", {in(l, 0)}, "embedding");
      output = "embedding";
    } else if (type == "MSELoss" || type == "L1Loss") {
      // Back to pixels where the target was the normalised input.
      if (l.bottom_size() > 1 && l.bottom(1) == "data") {
        graph.node("Mul", {in(l, 0), "data.std"}, "reconstruction.scaled");
        graph.node("Add", {"reconstruction.scaled", "data.mean"}, "reconstruction");
      } else {
        graph.node("Identity", {in(l, 0)}, "reconstruction");
      }
      output = "reconstruction";
    } else {
      throw UserError("layer '" + l.name() + "': " + type + " has no ONNX export");
    }
  }
  if (output.empty()) throw UserError("net: no loss layer, so no output to export");
  value_info(g->add_output(), output, batch, output_dims);
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw std::runtime_error("ONNX: cannot serialise");
  return bytes;
}

}  // namespace dptrain
