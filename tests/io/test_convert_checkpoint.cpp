#include <gtest/gtest.h>
#include <torch/torch.h>

#include "combo/core/state_dict.h"
#include "io_test_helpers.h"
#include "testing/testing.h"

namespace fs = std::filesystem;
using combo::TensorDict;
using combo::testing::shell_quote;
using combo::testing::TempDir;

namespace {

fs::path python_dir() { return combo::testing::source_dir() / "tests/python"; }
fs::path converter() { return combo::testing::source_dir() / "tools/convert_checkpoint.py"; }

// The formulas of reference_tensors() / reference_numpy() in test_convert_checkpoint.py.
TensorDict reference_tensors(const std::string& prefix) {
  return {
      {prefix + "layer.weight", torch::arange(12, torch::kFloat32).reshape({3, 4}) * 0.25},
      {prefix + "layer.bias", torch::tensor({-1.0f, 0.5f, 3.0f})},
      {prefix + "norm.running_var", torch::arange(3, torch::kFloat64) + 0.5},
      {prefix + "step", torch::tensor(int64_t{7})},
  };
}

void expect_same(const TensorDict& want, const TensorDict& got) {
  ASSERT_EQ(want.size(), got.size());
  for (const auto& [k, v] : want) {
    ASSERT_TRUE(got.count(k)) << "missing " << k;
    EXPECT_EQ(v.scalar_type(), got.at(k).scalar_type()) << k;
    EXPECT_TENSOR_EQ(v, got.at(k)) << k;
  }
}

void run_converter(const std::string& args) {
  std::string out;
  const std::string cmd = "/usr/bin/python3 " + shell_quote(converter().string()) + " " + args;
  ASSERT_EQ(combo::testing::run_command(cmd, &out), 0) << cmd << "\n" << out;
}

}  // namespace

TEST(ConvertCheckpointTest, ConvertedFilesLoadInCppWithExactValues) {
  COMBO_REQUIRE_PYTHON_TORCH_OR_SKIP();
  TempDir dir;
  std::string out;
  const std::string make = "/usr/bin/python3 " +
                           shell_quote((python_dir() / "test_convert_checkpoint.py").string()) +
                           " --make-inputs " + shell_quote(dir.path().string());
  ASSERT_EQ(combo::testing::run_command(make, &out), 0) << make << "\n" << out;
  auto in = [&](const std::string& name) { return shell_quote(dir.file(name)); };

  // An OrderedDict state dict (LibTorch 1.13 cannot read the original).
  run_converter(in("ordered.pth") + " " + in("ordered.pt"));
  expect_same(reference_tensors("backbone."), combo::load_state_dict(dir.file("ordered.pt")));

  // {"state_dict": ..., "epoch": 3} with the prefix rewritten.
  run_converter(in("wrapped.pth") + " " + in("wrapped.pt") + " --strip backbone. --prefix model.");
  expect_same(reference_tensors("model."), combo::load_state_dict(dir.file("wrapped.pt")));

  // One entry: torch.save writes it with SETITEM, which LibTorch 1.13 rejects; the converter not.
  run_converter(in("one_entry.pth") + " " + in("one_entry.pt"));
  expect_same({{"only", torch::arange(5, torch::kFloat64) - 2}},
              combo::load_state_dict(dir.file("one_entry.pt")));

  // A detectron2 pickle of numpy arrays with "__author__" and "matching_heuristics".
  run_converter(in("d2.pkl") + " " + in("d2.pt") + " --exclude '^head\\.' --prefix backbone.");
  expect_same(
      {
          {"backbone.patch_embed1.proj.weight",
           torch::arange(24, torch::kFloat32).reshape({2, 3, 2, 2}) / 8},
          {"backbone.block1.0.norm1.bias", torch::tensor({0.5f, -0.5f})},
      },
      combo::load_state_dict(dir.file("d2.pt")));
}

TEST(ConvertCheckpointTest, PythonUnitTestsPass) {
  COMBO_REQUIRE_PYTHON_TORCH_OR_SKIP();
  std::string out;
  const std::string cmd =
      "/usr/bin/python3 " + shell_quote((python_dir() / "test_convert_checkpoint.py").string());
  EXPECT_EQ(combo::testing::run_command(cmd, &out), 0) << out;
  EXPECT_NE(out.find("OK"), std::string::npos) << out;
}
