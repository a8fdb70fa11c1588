#include <gtest/gtest.h>

#include <fstream>
#include <functional>

#include "combo/core/check.h"
#include "combo/engine/config.h"
#include "testing/testing.h"

using combo::engine::Config;
using combo::engine::dump_config;
using combo::engine::load_config;
using combo::testing::TempDir;

namespace {

void write(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

// Runs fn, expects combo::Error, returns its message.
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const combo::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected combo::Error";
  return "";
}

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE((haystack).find(needle), std::string::npos) << "message: " << (haystack)

}  // namespace

TEST(ConfigTest, DefaultsAreTheOfficialRecipe) {
  const Config c = load_config("");
  EXPECT_EQ(c.model.backbone.name, "pvt_v2_b5");
  EXPECT_EQ(c.model.decoder.num_queries, 100);
  EXPECT_EQ(c.model.decoder.dec_layers, 10);
  EXPECT_EQ(c.model.fusion.type, "bidirectional");
  EXPECT_EQ(c.model.decoder.audio_query_layout, "official");
  EXPECT_DOUBLE_EQ(c.solver.base_lr, 1e-4);
  EXPECT_DOUBLE_EQ(c.solver.clip_gradients.value, 0.01);
  EXPECT_DOUBLE_EQ(c.loss.consistency.weight, 10.0);
  EXPECT_EQ(c.loss.train_num_points, 12544);
  EXPECT_EQ(c.data.augment.short_sides.size(), 16u);
  EXPECT_TRUE(c == Config{});
}

TEST(ConfigTest, BaseChainsResolveRelativeToTheNamingFile) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() / "_base_" / "deeper");
  write(
      dir.file("_base_/deeper/root.yaml"),
      "model:\n  decoder:\n    num_queries: 50\n    hidden_dim: 128\nsolver:\n  base_lr: 0.001\n");
  write(dir.file("_base_/a.yaml"),
        "_base_: deeper/root.yaml\nmodel:\n  decoder:\n    num_queries: 60\n  num_classes: 3\n");
  write(dir.file("_base_/b.yaml"), "model:\n  num_classes: 71\n  backbone:\n    name: resnet50\n");
  write(dir.file("run.yaml"),
        "_base_: [_base_/a.yaml, _base_/b.yaml]\nsolver:\n  max_iter: 20\n"
        "data:\n  augment:\n    short_sides: [112, 224]\n");
  const Config c = load_config(dir.file("run.yaml"));
  EXPECT_EQ(c.model.decoder.num_queries, 60);  // a overrides root
  EXPECT_EQ(c.model.decoder.hidden_dim, 128);  // from root through a
  EXPECT_EQ(c.model.num_classes, 71);          // the later base (b) wins over a
  EXPECT_EQ(c.model.backbone.name, "resnet50");
  EXPECT_DOUBLE_EQ(c.solver.base_lr, 0.001);
  EXPECT_EQ(c.solver.max_iter, 20);
  EXPECT_EQ(c.data.augment.short_sides, (std::vector<int64_t>{112, 224}));
  EXPECT_EQ(c.model.decoder.n_heads, 8);  // untouched default
}

TEST(ConfigTest, OverridesWinAndAreTypedByTheirField) {
  TempDir dir;
  write(dir.file("run.yaml"), "solver:\n  max_iter: 20\nmodel:\n  pre_sam:\n    enabled: true\n");
  const Config c =
      load_config(dir.file("run.yaml"),
                  {"solver.max_iter=7", "solver.base_lr=2e-4", "model.pre_sam.enabled=false",
                   "data.root=/data/with: colon #x", "data.augment.short_sides=100,200",
                   "model.pixel_mean=[1, 2.5, 3]", "solver.warmup_factor=1",
                   "loss.consistency.type=none", "solver.max_iter=9"});
  EXPECT_EQ(c.solver.max_iter, 9);  // the last override of a key wins
  EXPECT_DOUBLE_EQ(c.solver.base_lr, 2e-4);
  EXPECT_FALSE(c.model.pre_sam.enabled);
  EXPECT_EQ(c.data.root, "/data/with: colon #x");
  EXPECT_EQ(c.data.augment.short_sides, (std::vector<int64_t>{100, 200}));
  EXPECT_EQ(c.model.pixel_mean, (std::vector<double>{1.0, 2.5, 3.0}));
  EXPECT_DOUBLE_EQ(c.solver.warmup_factor, 1.0);
  EXPECT_EQ(c.loss.consistency.type, "none");
}

TEST(ConfigTest, UnknownKeysNameThePathAndTheFile) {
  TempDir dir;
  write(dir.file("bad.yaml"), "model:\n  decoder:\n    num_querys: 5\n");
  auto msg = error_of([&] { load_config(dir.file("bad.yaml")); });
  EXPECT_HAS(msg, "model.decoder.num_querys");
  EXPECT_HAS(msg, "bad.yaml");
  EXPECT_HAS(msg, "did you mean 'model.decoder.num_queries'");

  msg = error_of([&] { load_config("", {"solver.lr=1"}); });
  EXPECT_HAS(msg, "solver.lr");
  EXPECT_HAS(msg, "command line");

  write(dir.file("group.yaml"), "model:\n  decoder: 3\n");
  msg = error_of([&] { load_config(dir.file("group.yaml")); });
  EXPECT_HAS(msg, "model.decoder");
  EXPECT_HAS(msg, "group");
}

TEST(ConfigTest, WrongTypesNameThePathTheFileAndTheValue) {
  TempDir dir;
  struct Case {
    std::string yaml, key, value;
  };
  const std::vector<Case> cases = {
      {"solver:\n  max_iter: many\n", "solver.max_iter", "many"},
      {"solver:\n  max_iter: 1.5\n", "solver.max_iter", "1.5"},
      {"solver:\n  base_lr: fast\n", "solver.base_lr", "fast"},
      {"model:\n  pre_sam:\n    enabled: maybe\n", "model.pre_sam.enabled", "maybe"},
      {"data:\n  augment:\n    short_sides: 224\n", "data.augment.short_sides", "224"},
      {"data:\n  augment:\n    short_sides: [224, big]\n", "data.augment.short_sides[1]", "big"},
      {"data:\n  root: [a, b]\n", "data.root", "list"},
  };
  for (const auto& c : cases) {
    write(dir.file("t.yaml"), c.yaml);
    auto msg = error_of([&] { load_config(dir.file("t.yaml")); });
    EXPECT_HAS(msg, "'" + c.key + "'");
    EXPECT_HAS(msg, "t.yaml");
    EXPECT_HAS(msg, c.value);
  }
  auto msg = error_of([&] { load_config("", {"solver.max_iter=ten"}); });
  EXPECT_HAS(msg, "solver.max_iter");
  EXPECT_HAS(msg, "ten");
  EXPECT_HAS(msg, "command line");
  msg = error_of([&] { load_config("", {"model.pre_sam.enabled=2"}); });
  EXPECT_HAS(msg, "model.pre_sam.enabled");
}

TEST(ConfigTest, ChoicesAreChecked) {
  auto msg = error_of([&] { load_config("", {"model.fusion.type=sideways"}); });
  EXPECT_HAS(msg, "model.fusion.type");
  EXPECT_HAS(msg, "sideways");
  EXPECT_HAS(msg, "bidirectional");
  TempDir dir;
  write(dir.file("c.yaml"), "model:\n  backbone:\n    name: vit_h\n");
  msg = error_of([&] { load_config(dir.file("c.yaml")); });
  EXPECT_HAS(msg, "model.backbone.name");
  EXPECT_HAS(msg, "c.yaml");
}

TEST(ConfigTest, BaseErrorsNameTheFiles) {
  TempDir dir;
  write(dir.file("child.yaml"), "_base_: missing.yaml\n");
  auto msg = error_of([&] { load_config(dir.file("child.yaml")); });
  EXPECT_HAS(msg, "missing.yaml");
  EXPECT_HAS(msg, "child.yaml");

  write(dir.file("a.yaml"), "_base_: b.yaml\n");
  write(dir.file("b.yaml"), "_base_: [c.yaml]\n");
  write(dir.file("c.yaml"), "_base_: a.yaml\n");
  msg = error_of([&] { load_config(dir.file("a.yaml")); });
  EXPECT_HAS(msg, "cycle");
  EXPECT_HAS(msg, "a.yaml -> ");
  EXPECT_HAS(msg, "c.yaml");

  write(dir.file("badbase.yaml"), "_base_: {x: 1}\n");
  msg = error_of([&] { load_config(dir.file("badbase.yaml")); });
  EXPECT_HAS(msg, "_base_");

  msg = error_of([&] { load_config(dir.file("nope.yaml")); });
  EXPECT_HAS(msg, "nope.yaml");

  write(dir.file("broken.yaml"), "model:\n  decoder: [1, 2\n");
  msg = error_of([&] { load_config(dir.file("broken.yaml")); });
  EXPECT_HAS(msg, "broken.yaml");
  EXPECT_HAS(msg, "line");

  write(dir.file("list.yaml"), "- a\n- b\n");
  msg = error_of([&] { load_config(dir.file("list.yaml")); });
  EXPECT_HAS(msg, "list.yaml");

  msg = error_of([&] { load_config("", {"solver.max_iter"}); });
  EXPECT_HAS(msg, "key.path=value");
}

TEST(ConfigTest, EmptyFileAndDiamondBasesAreFine) {
  TempDir dir;
  write(dir.file("empty.yaml"), "");
  EXPECT_TRUE(load_config(dir.file("empty.yaml")) == Config{});
  // A file reached twice through different bases is not a cycle.
  write(dir.file("common.yaml"), "solver:\n  max_iter: 5\n");
  write(dir.file("l.yaml"), "_base_: common.yaml\n");
  write(dir.file("r.yaml"), "_base_: common.yaml\n");
  write(dir.file("top.yaml"), "_base_: [l.yaml, r.yaml]\n");
  EXPECT_EQ(load_config(dir.file("top.yaml")).solver.max_iter, 5);
}

TEST(ConfigTest, DumpLoadsBackToTheSameConfig) {
  Config c = load_config(
      "", {"solver.base_lr=0.00012345678901234", "model.pixel_std=[0.1, 1e-30, 3]",
           "data.root=", "output_dir=out dir/with spaces", "runtime.seed=-3",
           "data.augment.short_sides=[]", "model.decoder.pre_norm=true", "data.train_split=123",
           "data.val_split=true", "loss.no_object_weight=1e+300"});
  const std::string yaml = dump_config(c);
  TempDir dir;
  write(dir.file("dump.yaml"), yaml);
  const Config back = load_config(dir.file("dump.yaml"));
  EXPECT_TRUE(back == c) << yaml;
  EXPECT_EQ(back.data.train_split, "123");
  EXPECT_EQ(back.data.val_split, "true");
  EXPECT_EQ(dump_config(back), yaml);
  EXPECT_FALSE(back == Config{});
}

TEST(ConfigTest, RepositoryConfigsLoad) {
  const auto dir = combo::testing::source_dir() / "configs";
  int loaded = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.path().extension() != ".yaml") continue;
    // configs/sweeps/ holds combo-sweep files, not configs (tested in test_sweep.cpp).
    if (e.path().parent_path().filename() == "sweeps") continue;
    SCOPED_TRACE(e.path().string());
    EXPECT_NO_THROW(load_config(e.path().string()));
    ++loaded;
  }
  EXPECT_GT(loaded, 0);
}

TEST(ConfigTest, DataSourceAndSyntheticTaskKeys) {
  const Config d = load_config("");
  EXPECT_EQ(d.data.source, "files");
  EXPECT_EQ(d.data.synthetic.train_videos, 64);
  EXPECT_EQ(d.data.synthetic.eval_videos, 16);
  EXPECT_EQ(d.data.synthetic.frames, 0);
  EXPECT_EQ(d.data.synthetic.image_size, 0);
  EXPECT_EQ(d.data.synthetic.seed, 0);
  EXPECT_EQ(d.data.synthetic.classes, 4);
  EXPECT_DOUBLE_EQ(d.data.synthetic.object_scale, 1.0);
  EXPECT_EQ(d.data.synthetic.style, "textured");
  const Config c = load_config(
      "",
      {"data.source=synthetic", "data.synthetic.train_videos=8", "data.synthetic.eval_videos=3",
       "data.synthetic.frames=4", "data.synthetic.image_size=48", "data.synthetic.seed=9",
       "data.synthetic.classes=6", "data.synthetic.object_scale=1.6", "data.synthetic.style=flat"});
  EXPECT_EQ(c.data.source, "synthetic");
  EXPECT_EQ(c.data.synthetic.train_videos, 8);
  EXPECT_EQ(c.data.synthetic.eval_videos, 3);
  EXPECT_EQ(c.data.synthetic.frames, 4);
  EXPECT_EQ(c.data.synthetic.image_size, 48);
  EXPECT_EQ(c.data.synthetic.seed, 9);
  EXPECT_EQ(c.data.synthetic.classes, 6);
  EXPECT_DOUBLE_EQ(c.data.synthetic.object_scale, 1.6);
  EXPECT_EQ(c.data.synthetic.style, "flat");
  EXPECT_TRUE(load_config("", {}) != c);
  // The dump carries them (a run folder's config.yaml reproduces the data).
  TempDir dir;
  write(dir.file("dump.yaml"), dump_config(c));
  EXPECT_TRUE(load_config(dir.file("dump.yaml")) == c);
  EXPECT_HAS(error_of([] { load_config("", {"data.source=disk"}); }), "data.source");
  EXPECT_HAS(error_of([] { load_config("", {"data.synthetic.style=cartoon"}); }),
             "data.synthetic.style");
  EXPECT_HAS(error_of([] { load_config("", {"data.synthetic.frames=many"}); }),
             "data.synthetic.frames");
  EXPECT_HAS(error_of([] { load_config("", {"data.synthetic.videos=3"}); }),
             "data.synthetic.videos");
}

TEST(ConfigTest, SyntheticConfigsAreTheOfficialRecipesOnTheInMemoryTask) {
  const auto dir = combo::testing::source_dir() / "configs";
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"synthetic/s4.yaml", "avs_s4/COMBO_PVTV2B5_bs8_90k.yaml"},
      {"synthetic/ms3.yaml", "avs_ms3/COMBO_PVTV2B5_bs8_20k.yaml"},
      {"synthetic/avss.yaml", "avss/COMBO_PVTV2B5_bs8_90k.yaml"}};
  for (const auto& [synthetic, official] : pairs) {
    Config s = load_config((dir / synthetic).string());
    const Config o = load_config((dir / official).string());
    EXPECT_EQ(s.data.source, "synthetic") << synthetic;
    EXPECT_EQ(s.model.backbone.weights, "") << synthetic;
    EXPECT_EQ(s.model.audio.weights, "") << synthetic;
    EXPECT_EQ(s.model.weights, "") << synthetic;
    // Everything else is the official recipe.
    s.data.source = o.data.source;
    s.model.backbone.weights = o.model.backbone.weights;
    s.model.audio.weights = o.model.audio.weights;
    s.output_dir = o.output_dir;
    EXPECT_TRUE(s == o) << synthetic << " differs from " << official << " beyond the data source, "
                        << "the weight files and output_dir";
  }
}
