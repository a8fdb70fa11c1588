#include "combo/data/dataset.h"

#include <algorithm>
#include <map>
#include <mutex>

#include "combo/core/check.h"
#include "combo/data/synthetic_dataset.h"

namespace combo::data {
namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, DatasetFactory> factories;
};

// Built on first use (no static-initialiser order to depend on), with the in-memory task in it.
Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    reg->factories["synthetic"] = [](const DatasetOptions& o) -> std::shared_ptr<const Dataset> {
      return std::make_shared<const SyntheticDataset>(o);
    };
    return reg;
  }();
  return *r;
}

}  // namespace

std::string to_string(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::kS4:
      return "s4";
    case DatasetKind::kMS3:
      return "ms3";
    case DatasetKind::kAVSS:
      return "avss";
  }
  return "?";
}

const std::vector<std::string>& Dataset::index_errors() const {
  static const std::vector<std::string> kNone;
  return kNone;
}

void register_dataset_source(const std::string& name, DatasetFactory factory) {
  COMBO_CHECK(!name.empty() && factory, "register_dataset_source: a name and a factory are needed");
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.factories[name] = std::move(factory);
}

std::vector<std::string> dataset_sources() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& [name, f] : r.factories) names.push_back(name);
  return names;
}

std::shared_ptr<const Dataset> make_dataset(const std::string& source,
                                            const DatasetOptions& options) {
  DatasetFactory factory;
  std::string known;
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    const auto it = r.factories.find(source);
    if (it != r.factories.end()) factory = it->second;
    for (const auto& [name, f] : r.factories) known += (known.empty() ? "" : ", ") + name;
  }
  if (!factory) {
    if (source == "files")
      COMBO_FAIL(
          "data.source 'files' (AVSBench on disk) needs the media stack (OpenCV, FFmpeg, "
          "libsndfile), and this build has none (COMBO_WITH_MEDIA=OFF): use "
          "data.source=synthetic, or a build configured with -DCOMBO_WITH_MEDIA=ON");
    COMBO_FAIL("data.source '", source, "' is not a dataset source of this build (sources: ", known,
               ")");
  }
  return factory(options);
}

}  // namespace combo::data
