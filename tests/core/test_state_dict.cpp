#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "combo/core/check.h"
#include "combo/core/state_dict.h"
#include "testing/python_check.h"
#include "testing/testing.h"

namespace fs = std::filesystem;
using combo::TensorDict;
using combo::testing::TempDir;

namespace {

struct TinyImpl : torch::nn::Module {
  TinyImpl() {
    fc = register_module("fc", torch::nn::Linear(3, 2));
    norm = register_module("norm", torch::nn::BatchNorm1d(2));
    scale = register_parameter("scale", torch::ones({2}));
  }
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
  torch::Tensor scale;
};
TORCH_MODULE(Tiny);

TensorDict expected_from_cpp() {
  return {
      {"backbone.weight", torch::arange(24, torch::kFloat32).reshape({2, 3, 4}) / 8.0},
      {"backbone.bias", torch::arange(5, torch::kFloat64) - 2.5},
      {"counter", torch::tensor(int64_t{7})},
      {"mask", torch::tensor({true, false, true})},
      {"head.scale", torch::full({1}, 0.125, torch::kFloat32)},
  };
}

std::string expect_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const combo::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected combo::Error";
  return "";
}

}  // namespace

TEST(StateDictTest, RoundTripKeepsNamesDtypesAndValues) {
  TempDir dir;
  const TensorDict d = expected_from_cpp();
  combo::save_state_dict(dir.file("a.pt"), d);
  const TensorDict back = combo::load_state_dict(dir.file("a.pt"));
  ASSERT_EQ(back.size(), d.size());
  for (const auto& [k, v] : d) {
    ASSERT_TRUE(back.count(k)) << k;
    EXPECT_TENSOR_EQ(v, back.at(k));
  }
}

TEST(StateDictTest, NestedDictsFlattenWithDots) {
  auto generic = [] { return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get()); };
  auto inner = generic();
  inner.insert("w", torch::ones({2}));
  inner.insert("b", torch::zeros({1}));
  auto root = generic();
  root.insert("model", inner);
  root.insert("step", torch::tensor(int64_t{3}));
  TensorDict flat = combo::flatten_tensor_dict(root);
  EXPECT_EQ(flat.size(), 3u);
  EXPECT_TRUE(flat.count("model.w"));
  EXPECT_TRUE(flat.count("model.b"));
  EXPECT_TRUE(flat.count("step"));

  TempDir dir;
  combo::save_pickle_file(dir.file("nested.pt"), root);
  TensorDict model = combo::load_state_dict(dir.file("nested.pt"), "model");
  EXPECT_EQ(model.size(), 2u);
  EXPECT_TENSOR_EQ(torch::ones({2}), model.at("w"));
  auto msg = expect_error([&] { combo::load_state_dict(dir.file("nested.pt"), "optimizer"); });
  EXPECT_NE(msg.find("optimizer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nested.pt"), std::string::npos) << msg;
}

TEST(StateDictTest, NonTensorLeafIsAnErrorNamingTheKey) {
  auto root = c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
  root.insert("a", torch::ones({1}));
  root.insert("name", std::string("x"));
  auto msg = expect_error([&] { combo::flatten_tensor_dict(root); });
  EXPECT_NE(msg.find("'name'"), std::string::npos) << msg;
  EXPECT_EQ(combo::flatten_tensor_dict(root, "", /*skip_non_tensors=*/true).size(), 1u);
}

TEST(StateDictTest, MissingAndCorruptFilesNameTheFile) {
  TempDir dir;
  auto msg = expect_error([&] { combo::load_state_dict(dir.file("nope.pt")); });
  EXPECT_NE(msg.find("nope.pt"), std::string::npos) << msg;
  {
    std::ofstream f(dir.file("junk.pt"), std::ios::binary);
    f << "this is not a pickle";
  }
  msg = expect_error([&] { combo::load_state_dict(dir.file("junk.pt")); });
  EXPECT_NE(msg.find("junk.pt"), std::string::npos) << msg;
  { std::ofstream f(dir.file("empty.pt"), std::ios::binary); }
  msg = expect_error([&] { combo::load_state_dict(dir.file("empty.pt")); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
}

TEST(StateDictTest, AtomicWriteReplacesAndLeavesNoTemporary) {
  TempDir dir;
  const std::string path = dir.file("ckpt.pt");
  combo::save_state_dict(path, {{"a", torch::ones({2})}});
  combo::save_state_dict(path, {{"a", torch::zeros({3})}, {"b", torch::ones({1})}});
  auto d = combo::load_state_dict(path);
  EXPECT_EQ(d.at("a").numel(), 3);
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
  // An unwritable target is a clear error and the old file stays intact.
  auto msg = expect_error([&] {
    combo::save_state_dict(dir.file("no_such_dir/ckpt.pt"), {{"a", torch::ones({1})}});
  });
  EXPECT_NE(msg.find("no_such_dir"), std::string::npos) << msg;
}

TEST(StateDictTest, StrictLoadReportsEveryProblemByName) {
  Tiny m;
  TensorDict d = combo::module_state_dict(*m);
  EXPECT_EQ(d.size(), 8u);  // fc.weight, fc.bias, scale, norm.{weight,bias,running_mean,var,nbt}
  TensorDict bad;
  for (const auto& [k, v] : d) bad[k] = v.clone();
  bad.erase("fc.bias");
  bad["extra.weight"] = torch::ones({1});
  bad["scale"] = torch::ones({5});
  combo::LoadOptions opts;
  opts.source = "bad.pt";
  auto msg = expect_error([&] { combo::load_state_dict_into(*m, bad, opts); });
  EXPECT_NE(msg.find("fc.bias"), std::string::npos) << msg;
  EXPECT_NE(msg.find("extra.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("scale: model [2], file [5]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bad.pt"), std::string::npos) << msg;

  opts.strict = false;
  auto before = m->fc->bias.clone();
  auto report = combo::load_state_dict_into(*m, bad, opts);
  EXPECT_EQ(report.missing, std::vector<std::string>{"fc.bias"});
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"extra.weight"});
  ASSERT_EQ(report.mismatched.size(), 1u);
  EXPECT_EQ(report.loaded, 6);
  EXPECT_TENSOR_EQ(before, m->fc->bias);

  opts.strict = true;
  opts.ignore_prefixes = {"extra."};
  bad["fc.bias"] = torch::full({2}, 3.0);
  bad["scale"] = torch::full({2}, 0.5);
  report = combo::load_state_dict_into(*m, bad, opts);
  EXPECT_TRUE(report.clean());
  EXPECT_TENSOR_EQ(torch::full({2}, 3.0), m->fc->bias);
  EXPECT_TENSOR_EQ(torch::full({2}, 0.5), m->scale.detach());
}

TEST(StateDictTest, PythonTorchReadsOursAndWeReadPythons) {
  COMBO_PYTHON_MODULE_OR_SKIP("torch", "apt-get install python3-torch");
  TempDir dir;
  combo::save_state_dict(dir.file("from_cpp.pt"), expected_from_cpp());
  const fs::path script = combo::testing::source_dir() / "tests/python/state_dict_interop.py";
  const std::string cmd = "/usr/bin/python3 " + script.string() + " " + dir.path().string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  // Python doubled every tensor (negated the bool): exact arithmetic.
  TensorDict back = combo::load_state_dict(dir.file("back_to_cpp.pt"));
  for (const auto& [k, v] : expected_from_cpp()) {
    ASSERT_TRUE(back.count(k)) << k;
    at::Tensor want = v.scalar_type() == torch::kBool ? v.logical_not() : v * 2;
    EXPECT_TENSOR_EQ(want, back.at(k)) << k;
  }

  TensorDict model = combo::load_state_dict(dir.file("from_python.pt"), "model");
  EXPECT_TENSOR_EQ(torch::arange(12, torch::kFloat32).reshape({3, 4}) * 0.25,
                   model.at("layer.weight"));
  EXPECT_TENSOR_EQ(torch::tensor({-1.0f, 0.5f, 3.0f}), model.at("layer.bias"));
  TensorDict all = combo::load_state_dict(dir.file("from_python.pt"));
  EXPECT_EQ(all.at("meta.iteration").item<int64_t>(), 42);
  EXPECT_EQ(all.at("meta.lr").scalar_type(), torch::kFloat64);

  // The two pickles LibTorch 1.13 cannot read get an explanation, not a cryptic failure.
  auto msg = expect_error([&] { combo::load_state_dict(dir.file("ordered.pt")); });
  EXPECT_NE(msg.find("ordered.pt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("convert_checkpoint.py"), std::string::npos) << msg;
  msg = expect_error([&] { combo::load_state_dict(dir.file("one_entry.pt")); });
  EXPECT_NE(msg.find("one_entry.pt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("convert_checkpoint.py"), std::string::npos) << msg;
}
