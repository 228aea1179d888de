// Config loading, command-line overrides, validation and the text a run
// folder stores: every form a user can write, every mistake they can make.
#include "core/config.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"

namespace dptrain {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kValid = R"pb(
  name: "tiny"
  seed: 7
  data {
    format: SYNTHETIC
    batch_size: 16
    mean: 0.5
    std: 0.25
    synthetic { channels: 1 classes: 4 }
  }
  net {
    name: "tiny"
    layer {
      name: "conv1"
      type: "Convolution"
      convolution { num_output: 4 kernel_size: 3 }
    }
    layer { name: "relu1" type: "ReLU" }
    layer {
      name: "fc"
      type: "InnerProduct"
      inner_product { num_output: 4 }
    }
    layer { name: "loss" type: "SoftmaxCrossEntropy" bottom: "fc" bottom: "label" }
  }
  solver {
    base_lr: 0.1
    epochs: 2
    lr_schedule { policy: COSINE }
  }
)pb";

TrainSpec valid_spec() { return parse_train_spec(kValid, "valid.textproto"); }

// The message of the UserError `f` throws; a test failure if it throws none.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a UserError";
  return "";
}

bool same(const TrainSpec& a, const TrainSpec& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

// ---------------------------------------------------------------------------
// Parsing and loading

TEST(ParseTrainSpec, ReadsValidText) {
  TrainSpec spec = valid_spec();
  EXPECT_EQ(spec.name(), "tiny");
  EXPECT_EQ(spec.seed(), 7u);
  EXPECT_EQ(spec.data().format(), DataSpec::SYNTHETIC);
  EXPECT_EQ(spec.data().batch_size(), 16);
  ASSERT_EQ(spec.net().layer_size(), 4);
  EXPECT_EQ(spec.net().layer(0).convolution().num_output(), 4);
  EXPECT_EQ(spec.net().layer(3).bottom_size(), 2);
  EXPECT_EQ(spec.solver().lr_schedule().policy(), LrSchedule::COSINE);
  EXPECT_FLOAT_EQ(spec.solver().base_lr(), 0.1f);
  EXPECT_NO_THROW(validate_train_spec(spec));
}

TEST(ParseTrainSpec, EmptyTextGivesDefaults) {
  TrainSpec spec = parse_train_spec("", "empty");
  EXPECT_EQ(spec.seed(), 1u);
  EXPECT_EQ(spec.data().batch_size(), 64);
}

TEST(ParseTrainSpec, SyntaxErrorNamesSourceLineAndColumn) {
  const std::string text =
      "name: \"x\"\n"
      "solver {\n"
      "  base_lr: 0.1\n"
      "  epochs: }\n";
  // The '}' where a value belongs is on line 4, column 11.
  EXPECT_THAT(error_of([&] { parse_train_spec(text, "cfg.textproto"); }),
              HasSubstr("cfg.textproto:4:11: "));
}

TEST(ParseTrainSpec, ErrorOnFirstLineFirstColumn) {
  EXPECT_THAT(error_of([] { parse_train_spec("{", "a.textproto"); }),
              HasSubstr("a.textproto:1:1: "));
}

TEST(ParseTrainSpec, UnclosedMessageReportsEndOfInput) {
  const std::string text = "solver {\n  base_lr: 0.1\n";
  EXPECT_THAT(error_of([&] { parse_train_spec(text, "b.textproto"); }),
              HasSubstr("b.textproto:3:1: "));
}

TEST(ParseTrainSpec, UnknownFieldNamesFieldAndPosition) {
  const std::string text =
      "solver {\n"
      "  bse_lr: 0.1\n"
      "}\n";
  const std::string message = error_of([&] { parse_train_spec(text, "c.textproto"); });
  // Points at the name, and lists what the message does have.
  EXPECT_THAT(message, HasSubstr("c.textproto:2:3: "));
  EXPECT_THAT(message, HasSubstr("\"bse_lr\""));
  EXPECT_THAT(message, HasSubstr("valid fields: type, epochs, max_steps, base_lr"));
}

TEST(ParseTrainSpec, UnknownFieldColumnCountsTabsAsEditorsDo) {
  const std::string text = "net {\n\tlayer { nme: \"x\" }\n}\n";
  // The tab takes columns 1-8, "layer" starts at 9, "nme" at 17.
  const std::string message = error_of([&] { parse_train_spec(text, "t.textproto"); });
  EXPECT_THAT(message, HasSubstr("t.textproto:2:17: "));
  EXPECT_THAT(message, HasSubstr("\"nme\""));
}

TEST(ParseTrainSpec, UnknownFieldRepeatedOnOneLine) {
  // The second "seeds" on the line is the one reported (the first is a
  // string value).
  const std::string text = "name: \"seeds\" seeds: 3\n";
  EXPECT_THAT(error_of([&] { parse_train_spec(text, "u.textproto"); }),
              HasSubstr("u.textproto:1:15: "));
}

TEST(ParseTrainSpec, WrongValueTypeIsAnError) {
  const std::string message =
      error_of([] { parse_train_spec("data { batch_size: \"many\" }", "d.textproto"); });
  EXPECT_THAT(message, HasSubstr("d.textproto:1:20: "));
  EXPECT_THAT(message, HasSubstr("Expected integer"));
}

TEST(ParseTrainSpec, UnknownEnumValueIsAnError) {
  EXPECT_THAT(error_of([] { parse_train_spec("data { format: PNG }", "e.textproto"); }),
              HasSubstr("PNG"));
}

TEST(ParseTrainSpec, RepeatedSingularFieldIsAnError) {
  EXPECT_THAT(error_of([] { parse_train_spec("seed: 1\nseed: 2\n", "f.textproto"); }),
              HasSubstr("f.textproto:2:"));
}

class LoadTrainSpec : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("dptrain_test_config_" +
            std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  std::filesystem::path dir_;
};

TEST_F(LoadTrainSpec, ReadsFile) {
  const std::string path = write("ok.textproto", kValid);
  EXPECT_TRUE(same(load_train_spec(path), valid_spec()));
}

TEST_F(LoadTrainSpec, MissingFileNamesPath) {
  const std::string path = (dir_ / "nope.textproto").string();
  const std::string message = error_of([&] { load_train_spec(path); });
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("No such file"));
}

TEST_F(LoadTrainSpec, DirectoryIsNotAConfig) {
  EXPECT_THAT(error_of([&] { load_train_spec(dir_.string()); }), HasSubstr(dir_.string()));
}

TEST_F(LoadTrainSpec, SyntaxErrorNamesFilePath) {
  const std::string path = write("bad.textproto", "seed: 1\nnet { layer { name: } }\n");
  EXPECT_THAT(error_of([&] { load_train_spec(path); }), HasSubstr(path + ":2:21: "));
}

// ---------------------------------------------------------------------------
// Overrides that work

TEST(ApplyOverride, SetsScalars) {
  TrainSpec spec = valid_spec();
  apply_override(&spec, "solver.base_lr=0.25");
  apply_override(&spec, "data.batch_size=32");
  apply_override(&spec, "data.train_limit=9000000000");
  apply_override(&spec, "seed=18446744073709551615");
  apply_override(&spec, "runtime.threads=4");
  EXPECT_EQ(spec.solver().base_lr(), 0.25f);
  EXPECT_EQ(spec.data().batch_size(), 32);
  EXPECT_EQ(spec.data().train_limit(), 9000000000);
  EXPECT_EQ(spec.seed(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(spec.runtime().threads(), 4);
}

TEST(ApplyOverride, FloatsAreParsedExactly) {
  TrainSpec spec;
  apply_override(&spec, "solver.base_lr=0.1");
  apply_override(&spec, "solver.momentum=-0.5");
  apply_override(&spec, "solver.adam_eps=1e-8");
  EXPECT_EQ(spec.solver().base_lr(), 0.1f);
  EXPECT_EQ(spec.solver().momentum(), -0.5f);
  EXPECT_EQ(spec.solver().adam_eps(), 1e-8f);
}

TEST(ApplyOverride, StringsAreTakenVerbatim) {
  TrainSpec spec;
  apply_override(&spec, "name=run a=b, c");
  EXPECT_EQ(spec.name(), "run a=b, c");
  apply_override(&spec, "name=");
  EXPECT_TRUE(spec.has_name());
  EXPECT_EQ(spec.name(), "");
}

TEST(ApplyOverride, EnumsByNameInAnyCase) {
  TrainSpec spec = valid_spec();
  apply_override(&spec, "solver.lr_schedule.policy=multistep");
  EXPECT_EQ(spec.solver().lr_schedule().policy(), LrSchedule::MULTISTEP);
  apply_override(&spec, "solver.lr_schedule.policy=STEP");
  EXPECT_EQ(spec.solver().lr_schedule().policy(), LrSchedule::STEP);
  apply_override(&spec, "data.format=Cifar10");
  EXPECT_EQ(spec.data().format(), DataSpec::CIFAR10);
  apply_override(&spec, "solver.type=adamw");
  EXPECT_EQ(spec.solver().type(), SolverSpec::ADAMW);
}

TEST(ApplyOverride, Bools) {
  TrainSpec spec;
  for (const auto& [text, expected] : std::vector<std::pair<std::string, bool>>{{"true", true},
                                                                                {"false", false},
                                                                                {"1", true},
                                                                                {"0", false},
                                                                                {"TRUE", true},
                                                                                {"False", false}}) {
    apply_override(&spec, "data.augment.horizontal_flip=" + text);
    EXPECT_EQ(spec.data().augment().horizontal_flip(), expected) << text;
  }
}

TEST(ApplyOverride, CreatesIntermediateMessages) {
  TrainSpec spec;
  EXPECT_FALSE(spec.has_solver());
  apply_override(&spec, "solver.lr_schedule.gamma=0.5");
  ASSERT_TRUE(spec.has_solver());
  ASSERT_TRUE(spec.solver().has_lr_schedule());
  EXPECT_EQ(spec.solver().lr_schedule().gamma(), 0.5f);
  apply_override(&spec, "data.synthetic.height=28");
  EXPECT_TRUE(spec.data().has_synthetic());
  EXPECT_EQ(spec.data().synthetic().height(), 28);
}

TEST(ApplyOverride, LayerByIndex) {
  TrainSpec spec = valid_spec();
  apply_override(&spec, "net.layer[0].convolution.num_output=12");
  EXPECT_EQ(spec.net().layer(0).convolution().num_output(), 12);
  apply_override(&spec, "net.layer[3].loss.label_smoothing=0.1");
  EXPECT_TRUE(spec.net().layer(3).has_loss());
  EXPECT_EQ(spec.net().layer(3).loss().label_smoothing(), 0.1f);
}

TEST(ApplyOverride, LayerByName) {
  TrainSpec spec = valid_spec();
  apply_override(&spec, "net.layer[conv1].convolution.num_output=12");
  EXPECT_EQ(spec.net().layer(0).convolution().num_output(), 12);
  apply_override(&spec, "net.layer[relu1].activation.alpha=0.2");
  EXPECT_TRUE(spec.net().layer(1).has_activation());
  EXPECT_EQ(spec.net().layer(1).activation().alpha(), 0.2f);
  apply_override(&spec, "net.layer[fc].type=Dropout");
  EXPECT_EQ(spec.net().layer(2).type(), "Dropout");
}

TEST(ApplyOverride, LayerNameWithDots) {
  TrainSpec spec = valid_spec();
  spec.mutable_net()->mutable_layer(0)->set_name("block1.conv");
  apply_override(&spec, "net.layer[block1.conv].convolution.stride=2");
  EXPECT_EQ(spec.net().layer(0).convolution().stride(), 2);
}

TEST(ApplyOverride, RepeatedScalarListReplacesWholeList) {
  TrainSpec spec = valid_spec();
  apply_override(&spec, "data.mean=0.5,0.4,0.3");
  ASSERT_EQ(spec.data().mean_size(), 3);
  EXPECT_EQ(spec.data().mean(0), 0.5f);
  EXPECT_EQ(spec.data().mean(1), 0.4f);
  EXPECT_EQ(spec.data().mean(2), 0.3f);
  apply_override(&spec, "data.mean=0.2");
  ASSERT_EQ(spec.data().mean_size(), 1);
  EXPECT_EQ(spec.data().mean(0), 0.2f);
  apply_override(&spec, "data.mean=");
  EXPECT_EQ(spec.data().mean_size(), 0);
  apply_override(&spec, "solver.lr_schedule.milestone_epochs=1, 2.5 ,3");
  EXPECT_THAT(spec.solver().lr_schedule().milestone_epochs(),
              ::testing::ElementsAre(1.0f, 2.5f, 3.0f));
  apply_override(&spec, "net.layer[loss].bottom=fc,label");
  EXPECT_THAT(spec.net().layer(3).bottom(), ::testing::ElementsAre("fc", "label"));
}

TEST(ApplyOverride, RepeatedScalarElementByIndex) {
  TrainSpec spec = valid_spec();
  apply_override(&spec, "data.mean=0.5,0.4,0.3");
  apply_override(&spec, "data.mean[1]=0.7");
  EXPECT_THAT(spec.data().mean(), ::testing::ElementsAre(0.5f, 0.7f, 0.3f));
}

TEST(ApplyOverride, SurroundingSpacesInPathAndNumbersAreIgnored) {
  TrainSpec spec;
  apply_override(&spec, " solver.epochs = 3");
  EXPECT_EQ(spec.solver().epochs(), 3);
}

// ---------------------------------------------------------------------------
// Overrides that fail: each message names the override and says what is
// wrong, and the spec is left as it was.

struct OverrideErrorCase {
  std::string assignment;
  std::vector<std::string> expected;  // substrings of the message
};

class ApplyOverrideError : public ::testing::TestWithParam<OverrideErrorCase> {};

TEST_P(ApplyOverrideError, ThrowsAndLeavesSpecUnchanged) {
  const OverrideErrorCase& c = GetParam();
  TrainSpec spec = valid_spec();
  const TrainSpec before = spec;
  const std::string message = error_of([&] { apply_override(&spec, c.assignment); });
  EXPECT_THAT(message, HasSubstr("override \"" + c.assignment + "\""));
  for (const std::string& s : c.expected) EXPECT_THAT(message, HasSubstr(s));
  EXPECT_TRUE(same(spec, before)) << "a failed override changed the spec";
}

const OverrideErrorCase kOverrideErrors[] = {
    // Form of the assignment and the path.
    {"solver.base_lr", {"no '='"}},
    {"=1", {"empty path"}},
    {"solver..base_lr=1", {"empty field name"}},
    {"solver.=1", {"ends with '.'"}},
    {"net.layer[0.name=x", {"missing ']'"}},
    {"net.layer[].name=x", {"empty []"}},
    {"net.layer[0]x.name=x", {"expected '.'"}},
    // Unknown fields, with the valid names of that message.
    {"solver.bse_lr=1",
     {"unknown field \"bse_lr\"", "in solver (SolverSpec)", "base_lr", "momentum", "lr_schedule"}},
    {"sed=1", {"unknown field \"sed\"", "top level", "seed", "solver"}},
    {"net.layer[conv1].convolution.num_outputs=3",
     {"\"num_outputs\"", "net.layer[conv1].convolution", "num_output", "kernel_size"}},
    // Paths that end on a message or go through a scalar or a list.
    {"solver=1", {"ends on message solver", "base_lr"}},
    {"solver.lr_schedule=cosine", {"ends on message solver.lr_schedule", "policy"}},
    {"net.layer[1]=x", {"ends on message net.layer[1]", "name", "type"}},
    {"net.layer.name=x", {"net.layer is a list", "layer[INDEX]", "layer[NAME]"}},
    {"seed.low=1", {"seed is a uint64", "not a message"}},
    {"solver[0].base_lr=1", {"solver is not a list"}},
    // Elements that do not exist.
    {"net.layer[4].name=x", {"index 4 out of range", "net.layer has 4 elements"}},
    {"net.layer[99999999999999999999].name=x", {"out of range"}},
    {"net.layer[conv9].name=x", {"no element named \"conv9\"", "net.layer", "conv1, relu1"}},
    {"net.layer[-1].name=x", {"no element named \"-1\""}},
    {"data.mean[1]=0.5", {"index 1 out of range", "data.mean has 1 element"}},
    {"data.mean[first]=0.5", {"data.mean[first]", "by index only"}},
    // Values that do not parse as the field's type.
    {"data.batch_size=abc", {"data.batch_size expects int32", "\"abc\""}},
    {"data.batch_size=12abc", {"data.batch_size expects int32", "\"12abc\""}},
    {"data.batch_size=1.5", {"data.batch_size expects int32"}},
    {"data.batch_size=", {"data.batch_size expects int32"}},
    {"data.batch_size=0x10", {"data.batch_size expects int32"}},
    {"data.batch_size=2147483648", {"data.batch_size", "out of range for int32"}},
    {"data.batch_size=-2147483649", {"data.batch_size", "out of range for int32"}},
    {"data.train_limit=9223372036854775808", {"data.train_limit", "out of range for int64"}},
    {"seed=18446744073709551616", {"seed", "out of range for uint64"}},
    {"seed=-1", {"seed is unsigned", "negative"}},
    {"solver.base_lr=abc", {"solver.base_lr expects float", "\"abc\""}},
    {"solver.base_lr=0.1x", {"solver.base_lr expects float", "\"0.1x\""}},
    {"solver.base_lr=0.1 0.2", {"solver.base_lr expects float"}},
    {"solver.base_lr=1e39", {"solver.base_lr", "out of range for float"}},
    {"solver.base_lr=inf", {"solver.base_lr must be finite"}},
    {"solver.base_lr=nan", {"solver.base_lr must be finite"}},
    {"solver.lr_schedule.policy=weekly",
     {"solver.lr_schedule.policy", "unknown value \"weekly\"",
      "CONSTANT, STEP, MULTISTEP, COSINE"}},
    {"data.format=3", {"data.format", "IDX, CIFAR10, SYNTHETIC"}},
    {"data.augment.horizontal_flip=yes", {"data.augment.horizontal_flip expects a bool", "yes"}},
    {"data.augment.horizontal_flip=2", {"data.augment.horizontal_flip expects a bool"}},
    {"data.mean=0.5,x,0.3", {"data.mean[1] expects float", "\"x\""}},
    {"data.mean=0.5,,0.3", {"data.mean[1] expects float"}},
    {"data.mean[0]=x", {"data.mean[0] expects float"}},
};

INSTANTIATE_TEST_SUITE_P(Cases, ApplyOverrideError, ::testing::ValuesIn(kOverrideErrors));

TEST(ApplyOverride, FailureDoesNotCreateIntermediateMessages) {
  TrainSpec spec;
  EXPECT_THROW(apply_override(&spec, "solver.lr_schedule.gama=0.5"), UserError);
  EXPECT_FALSE(spec.has_solver());
  EXPECT_THROW(apply_override(&spec, "data.batch_size=big"), UserError);
  EXPECT_FALSE(spec.has_data());
}

// ---------------------------------------------------------------------------
// Validation

struct ValidationCase {
  std::vector<std::string> overrides;  // applied to the valid spec
  std::string expected;                // substring of the message
};

class ValidateTrainSpecError : public ::testing::TestWithParam<ValidationCase> {};

TEST_P(ValidateTrainSpecError, Rejects) {
  TrainSpec spec = valid_spec();
  for (const std::string& o : GetParam().overrides) apply_override(&spec, o);
  EXPECT_THAT(error_of([&] { validate_train_spec(spec); }), HasSubstr(GetParam().expected));
}

const ValidationCase kValidationErrors[] = {
    // data
    {{"data.batch_size=0"}, "data.batch_size must be > 0 (got 0)"},
    {{"data.batch_size=-8"}, "data.batch_size must be > 0 (got -8)"},
    {{"data.train_limit=-1"}, "data.train_limit must be >= 0 (got -1)"},
    {{"data.test_limit=-5"}, "data.test_limit must be >= 0 (got -5)"},
    {{"data.prefetch_batches=0"}, "data.prefetch_batches must be >= 1 (got 0)"},
    {{"data.mean=0.1,0.2"},
     "data.mean must have 0 or 1 values (SYNTHETIC images have 1 "
     "channel) (got 2)"},
    {{"data.std=0.1,0.2"}, "data.std must have 0 or 1 values"},
    {{"data.format=idx", "data.mean=0.1,0.2,0.3"}, "data.mean must have 0 or 1 values"},
    {{"data.format=cifar10", "data.mean=0.1,0.2"},
     "data.mean must have 0, 1 or 3 values (CIFAR10 images have 3 channels) (got 2)"},
    {{"data.synthetic.channels=2", "data.std=1,1,1"}, "data.std must have 0, 1 or 2 values"},
    {{"data.std=0"}, "data.std[0] must be > 0 (got 0)"},
    {{"data.format=cifar10", "data.std=1,-0.5,1"}, "data.std[1] must be > 0 (got -0.5)"},
    {{"data.augment.crop_padding=-1"}, "data.augment.crop_padding must be >= 0 (got -1)"},
    {{"data.synthetic.train_size=0"}, "data.synthetic.train_size must be > 0 (got 0)"},
    {{"data.synthetic.test_size=-1"}, "data.synthetic.test_size must be > 0 (got -1)"},
    {{"data.synthetic.channels=0"}, "data.synthetic.channels must be > 0 (got 0)"},
    {{"data.synthetic.height=0"}, "data.synthetic.height must be > 0 (got 0)"},
    {{"data.synthetic.width=0"}, "data.synthetic.width must be > 0 (got 0)"},
    {{"data.synthetic.classes=0"}, "data.synthetic.classes must be > 0 (got 0)"},
    // net
    {{"net.layer[1].name="}, "net.layer[1].name must not be empty"},
    {{"net.layer[2].name=conv1"}, "net.layer[2].name \"conv1\" is already used by net.layer[0]"},
    {{"net.layer[fc].type="}, "net.layer[2] (fc).type must not be empty"},
    // solver
    {{"solver.epochs=0"}, "solver.epochs must be >= 1 (got 0)"},
    {{"solver.max_steps=-1"}, "solver.max_steps must be >= 0 (got -1)"},
    {{"solver.base_lr=-1"}, "solver.base_lr must be > 0 (got -1)"},
    {{"solver.base_lr=0"}, "solver.base_lr must be > 0 (got 0)"},
    {{"solver.momentum=1"}, "solver.momentum must be in [0, 1) (got 1)"},
    {{"solver.momentum=-0.1"}, "solver.momentum must be in [0, 1) (got -0.1)"},
    {{"solver.weight_decay=-0.0001"}, "solver.weight_decay must be >= 0 (got -0.0001)"},
    {{"solver.beta1=1"}, "solver.beta1 must be in [0, 1) (got 1)"},
    {{"solver.beta2=-0.5"}, "solver.beta2 must be in [0, 1) (got -0.5)"},
    {{"solver.adam_eps=0"}, "solver.adam_eps must be > 0 (got 0)"},
    {{"solver.clip_grad_norm=-1"}, "solver.clip_grad_norm must be >= 0 (got -1)"},
    {{"solver.nesterov=true", "solver.momentum=0"},
     "solver.momentum must be > 0 when solver.nesterov is true (got 0)"},
    // solver.lr_schedule
    {{"solver.lr_schedule.policy=step"},
     "solver.lr_schedule.step_epochs must be > 0 for policy STEP (got 0)"},
    {{"solver.lr_schedule.policy=step", "solver.lr_schedule.step_epochs=-2"},
     "solver.lr_schedule.step_epochs must be > 0 for policy STEP (got -2)"},
    {{"solver.lr_schedule.policy=multistep"},
     "solver.lr_schedule.milestone_epochs must not be empty for policy MULTISTEP"},
    {{"solver.lr_schedule.policy=multistep", "solver.lr_schedule.milestone_epochs=0,2"},
     "solver.lr_schedule.milestone_epochs[0] must be > 0 (got 0)"},
    {{"solver.lr_schedule.policy=multistep", "solver.lr_schedule.milestone_epochs=1,3,3"},
     "solver.lr_schedule.milestone_epochs[2] must be > the milestone before it (3) (got 3)"},
    {{"solver.lr_schedule.policy=multistep", "solver.lr_schedule.milestone_epochs=2,1.5"},
     "solver.lr_schedule.milestone_epochs[1] must be > the milestone before it (2) (got 1.5)"},
    {{"solver.lr_schedule.gamma=0"}, "solver.lr_schedule.gamma must be in (0, 1] (got 0)"},
    {{"solver.lr_schedule.gamma=1.5"}, "solver.lr_schedule.gamma must be in (0, 1] (got 1.5)"},
    {{"solver.lr_schedule.min_lr=-0.001"},
     "solver.lr_schedule.min_lr must be in [0, solver.base_lr = 0.1] (got -0.001)"},
    {{"solver.lr_schedule.min_lr=0.2"},
     "solver.lr_schedule.min_lr must be in [0, solver.base_lr = 0.1] (got 0.2)"},
    {{"solver.lr_schedule.warmup_epochs=-1"},
     "solver.lr_schedule.warmup_epochs must be >= 0 (got -1)"},
    {{"solver.lr_schedule.warmup_start_factor=0"},
     "solver.lr_schedule.warmup_start_factor must be in (0, 1] (got 0)"},
    {{"solver.lr_schedule.warmup_start_factor=1.01"},
     "solver.lr_schedule.warmup_start_factor must be in (0, 1] (got 1.01)"},
    // runtime
    {{"runtime.threads=-1"}, "runtime.threads must be >= 0 (got -1)"},
    {{"runtime.log_every_steps=0"}, "runtime.log_every_steps must be >= 1 (got 0)"},
    {{"runtime.eval_every_epochs=-1"}, "runtime.eval_every_epochs must be >= 0 (got -1)"},
    // checkpoint
    {{"checkpoint.every_steps=-1"}, "checkpoint.every_steps must be >= 0 (got -1)"},
    {{"checkpoint.every_epochs=-2"}, "checkpoint.every_epochs must be >= 0 (got -2)"},
    {{"checkpoint.every_seconds=-0.5"}, "checkpoint.every_seconds must be >= 0 (got -0.5)"},
    {{"checkpoint.keep=1"}, "checkpoint.keep must be >= 2 (got 1)"},
};

INSTANTIATE_TEST_SUITE_P(Cases, ValidateTrainSpecError, ::testing::ValuesIn(kValidationErrors));

// Values at the edges of each rule, and combinations the rules allow.
const std::vector<std::string> kValidOverrides[] = {
    {"data.batch_size=1", "data.prefetch_batches=1", "data.train_limit=0", "data.test_limit=10"},
    {"data.format=cifar10", "data.mean=0.49,0.48,0.45", "data.std=0.25"},
    {"data.format=cifar10", "data.mean=", "data.std=0.2,0.2,0.2"},
    {"data.synthetic.channels=3", "data.mean=0.5", "data.std=0.1,0.2,0.3"},
    {"data.augment.crop_padding=4", "data.augment.horizontal_flip=true"},
    {"solver.epochs=1", "solver.max_steps=0", "solver.momentum=0", "solver.weight_decay=0"},
    {"solver.nesterov=true", "solver.momentum=0.9"},
    {"solver.type=adamw", "solver.beta1=0", "solver.beta2=0.999", "solver.clip_grad_norm=0"},
    {"solver.lr_schedule.policy=step", "solver.lr_schedule.step_epochs=0.5",
     "solver.lr_schedule.gamma=1"},
    {"solver.lr_schedule.policy=multistep", "solver.lr_schedule.milestone_epochs=0.5,1,30"},
    {"solver.lr_schedule.min_lr=0.1", "solver.lr_schedule.warmup_epochs=0",
     "solver.lr_schedule.warmup_start_factor=1"},
    {"solver.lr_schedule.warmup_epochs=0.5", "solver.lr_schedule.warmup_start_factor=0.01"},
    {"runtime.threads=0", "runtime.log_every_steps=1", "runtime.eval_every_epochs=0"},
    {"checkpoint.every_steps=0", "checkpoint.every_epochs=0", "checkpoint.every_seconds=0",
     "checkpoint.keep=2"},
};

TEST(ValidateTrainSpec, AcceptsValuesAtTheEdges) {
  for (const std::vector<std::string>& overrides : kValidOverrides) {
    TrainSpec spec = valid_spec();
    for (const std::string& o : overrides) apply_override(&spec, o);
    SCOPED_TRACE(overrides.front());
    try {
      validate_train_spec(spec);
    } catch (const UserError& e) {
      ADD_FAILURE() << e.what();
    }
  }
}

TEST(ValidateTrainSpec, NetNeedsALayer) {
  TrainSpec spec = valid_spec();
  spec.mutable_net()->clear_layer();
  EXPECT_THAT(error_of([&] { validate_train_spec(spec); }),
              HasSubstr("net must have at least one layer"));
  spec.clear_net();
  EXPECT_THAT(error_of([&] { validate_train_spec(spec); }),
              HasSubstr("net must have at least one layer"));
}

TEST(ValidateTrainSpec, FloatsMustBeFinite) {
  TrainSpec spec = valid_spec();
  spec.mutable_solver()->set_base_lr(std::numeric_limits<float>::infinity());
  EXPECT_THAT(error_of([&] { validate_train_spec(spec); }),
              HasSubstr("solver.base_lr must be finite (got inf)"));

  // The text format itself accepts inf and nan.
  spec = valid_spec();
  spec.MergeFrom(parse_train_spec("data { mean: nan }", "g.textproto"));
  EXPECT_THAT(error_of([&] { validate_train_spec(spec); }),
              HasSubstr("data.mean[1] must be finite (got nan)"));

  spec = valid_spec();
  spec.mutable_net()->mutable_layer(1)->mutable_activation()->set_alpha(-INFINITY);
  EXPECT_THAT(error_of([&] { validate_train_spec(spec); }),
              HasSubstr("net.layer[1].activation.alpha must be finite (got -inf)"));
}

// ---------------------------------------------------------------------------
// to_text

TEST(ToText, RoundTrips) {
  TrainSpec spec = valid_spec();
  apply_override(&spec, "name=quote\" and \\ and \n newline");
  apply_override(&spec, "seed=18446744073709551615");
  apply_override(&spec, "data.mean=0.1,0.2,0.3");
  apply_override(&spec, "solver.base_lr=0.0123456789");
  apply_override(&spec, "solver.lr_schedule.policy=multistep");
  apply_override(&spec, "solver.lr_schedule.milestone_epochs=0.3333333,2");
  apply_override(&spec, "runtime.threads=0");  // explicitly set default survives
  spec.mutable_solver()->set_weight_decay(1.0f / 3.0f);
  spec.mutable_solver()->set_adam_eps(std::numeric_limits<float>::denorm_min());

  const std::string text = to_text(spec);
  const TrainSpec back = parse_train_spec(text, "config.textproto");
  EXPECT_TRUE(same(back, spec)) << text;
  EXPECT_EQ(back.SerializeAsString(), spec.SerializeAsString());
  EXPECT_TRUE(back.runtime().has_threads());
  EXPECT_EQ(to_text(back), text);
}

TEST(ToText, IsReadableTextFormat) {
  const std::string text = to_text(valid_spec());
  EXPECT_THAT(text, HasSubstr("name: \"tiny\""));
  EXPECT_THAT(text, HasSubstr("policy: COSINE"));
  EXPECT_THAT(text, Not(HasSubstr("momentum")));  // unset fields are not printed
}

// ---------------------------------------------------------------------------
// The configs shipped in configs/ parse and validate.

TEST(ShippedConfigs, ParseAndValidate) {
  const std::filesystem::path dir = std::filesystem::path(DPTRAIN_SOURCE_DIR) / "configs";
  std::vector<std::filesystem::path> files;
  if (std::filesystem::is_directory(dir)) {
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      // Sweep configs (sweep_*) are SweepSpecs, checked in the launcher's tests.
      const bool sweep = entry.path().filename().string().rfind("sweep_", 0) == 0;
      if (entry.is_regular_file() && entry.path().extension() == ".textproto" && !sweep) {
        files.push_back(entry.path());
      }
    }
  }
  std::sort(files.begin(), files.end());
  for (const std::filesystem::path& file : files) {
    SCOPED_TRACE(file.string());
    try {
      validate_train_spec(load_train_spec(file.string()));
    } catch (const UserError& e) {
      ADD_FAILURE() << e.what();
    }
  }
  RecordProperty("configs_checked", static_cast<int>(files.size()));
}

}  // namespace
}  // namespace dptrain
