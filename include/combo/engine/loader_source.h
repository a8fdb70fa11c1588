#pragma once
/// The data loader as the trainer's batch source: collated videos plus their training targets
/// (what combo-train feeds the Trainer).
#include <cstdint>
#include <utility>

#include "combo/core/check.h"
#include "combo/data/loader.h"
#include "combo/data/sample.h"
#include "combo/engine/trainer.h"

namespace combo::engine {

class LoaderSource : public BatchSource {
 public:
  LoaderSource(data::DataLoader& loader, loss::DatasetKind kind) : loader_(loader), kind_(kind) {}
  TrainBatch next() override {
    auto batch = loader_.next();
    COMBO_CHECK(batch.has_value(), "the training loader ended (it should be infinite)");
    auto t = data::make_targets(*batch, kind_, /*train=*/true);
    TrainBatch out;
    out.inputs = std::move(batch->inputs);
    out.targets = std::move(t.targets);
    out.layout = std::move(t.layout);
    return out;
  }
  std::pair<int64_t, int64_t> position() const override {
    const auto p = loader_.position();
    return {p.epoch, p.batch};
  }

 private:
  data::DataLoader& loader_;
  loss::DatasetKind kind_;
};

}  // namespace combo::engine
