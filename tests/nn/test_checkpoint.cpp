#include "combo/nn/checkpoint.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "combo/core/autocast.h"
#include "combo/core/env.h"
#include "testing/testing.h"

namespace {

// A small network with parameters and random draws: linear, GELU, dropout, stochastic-depth
// style per-row mask, and a second input added in (as `pos` in the deformable encoder).
struct Net : torch::nn::Module {
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(12, 32));
    fc2 = register_module("fc2", torch::nn::Linear(32, 12));
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& pos) {
    calls += 1;
    at::Tensor h = at::gelu(fc1->forward(x + pos));
    h = torch::dropout(h, 0.3, /*train=*/true);
    at::Tensor keep = at::empty({x.size(0), 1, 1}, x.options()).bernoulli_(0.8).div_(0.8);
    return x + fc2->forward(h) * keep;
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  int calls = 0;
};

class CheckpointTest : public combo::testing::SeededTest {};

}  // namespace

TEST_F(CheckpointTest, OutputsGradientsAndLaterRandomDrawsAreBitIdenticalToTheDirectCall) {
  auto direct = std::make_shared<Net>();
  auto ckpt = std::make_shared<Net>();
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < direct->parameters().size(); ++i)
      ckpt->parameters()[i].copy_(direct->parameters()[i]);
  }
  const at::Tensor x0 = torch::randn({6, 5, 12});
  const at::Tensor pos0 = torch::randn({6, 5, 12});
  const at::Tensor grad_out = torch::randn({6, 5, 12});
  const at::Tensor ref0 = torch::randn({1, 5, 2});  // a third input without a gradient

  auto run = [&](Net& net, bool checkpointed, at::Tensor* after) {
    at::Tensor x = x0.clone().requires_grad_(true);
    at::Tensor pos = pos0.clone().requires_grad_(true);
    torch::manual_seed(11);
    at::Tensor y;
    if (checkpointed) {
      y = combo::nn::checkpoint(
          [&net](const std::vector<at::Tensor>& in) {
            return net.forward(in[0], in[1]) + in[2].sum();
          },
          {x, pos, ref0});
    } else {
      y = net.forward(x, pos) + ref0.sum();
    }
    // Two stacked uses, so the backward of the second runs while the first is pending.
    y = y * 1.5;
    y.backward(grad_out);
    *after = torch::rand({4});  // the generator must continue where the forward left it
    return std::make_tuple(y.detach(), x.grad(), pos.grad());
  };
  at::Tensor after_direct, after_ckpt;
  auto [y_d, gx_d, gp_d] = run(*direct, false, &after_direct);
  auto [y_c, gx_c, gp_c] = run(*ckpt, true, &after_ckpt);
  EXPECT_EQ(direct->calls, 1);
  EXPECT_EQ(ckpt->calls, 2) << "the checkpointed forward runs again in backward";
  EXPECT_TRUE(torch::equal(y_d, y_c));
  EXPECT_TRUE(torch::equal(gx_d, gx_c));
  EXPECT_TRUE(torch::equal(gp_d, gp_c));
  for (size_t i = 0; i < direct->parameters().size(); ++i) {
    ASSERT_TRUE(ckpt->parameters()[i].grad().defined()) << "parameter " << i;
    EXPECT_TRUE(torch::equal(direct->parameters()[i].grad(), ckpt->parameters()[i].grad()))
        << "parameter " << i;
  }
  EXPECT_TRUE(torch::equal(after_direct, after_ckpt));
}

TEST_F(CheckpointTest, KeepsNoIntermediateTensorsOnlyItsInputs) {
  // The node's saved tensors are the inputs; the direct call's graph holds fc1's output etc.
  Net net;
  const at::Tensor x = torch::randn({2, 3, 12}).requires_grad_(true);
  const at::Tensor pos = torch::zeros({2, 3, 12});
  at::Tensor y = combo::nn::checkpoint(
      [&net](const std::vector<at::Tensor>& in) { return net.forward(in[0], in[1]); }, {x, pos});
  ASSERT_NE(y.grad_fn(), nullptr);
  EXPECT_NE(y.grad_fn()->name().find("CheckpointFunction"), std::string::npos)
      << y.grad_fn()->name();
  // Its inputs are x and pos only: no edge into fc1/fc2 (their gradients come from the
  // recomputation).
  EXPECT_EQ(y.grad_fn()->num_inputs(), 1u);
  EXPECT_EQ(y.grad_fn()->next_edges().size(), 2u);
}

TEST_F(CheckpointTest, RunsDirectlyWithoutGradientsOrWhenNoInputNeedsOne) {
  Net net;
  const at::Tensor x = torch::randn({2, 3, 12});
  const at::Tensor pos = torch::randn({2, 3, 12});
  auto fn = [&net](const std::vector<at::Tensor>& in) { return net.forward(in[0], in[1]); };
  {
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(combo::nn::checkpoint_applies({x.clone().requires_grad_(true)}));
    at::Tensor y = combo::nn::checkpoint(fn, {x, pos});
    EXPECT_EQ(y.grad_fn(), nullptr);
  }
  // No input needs a gradient: the recomputation could not reach the parameters, so the call is
  // direct and the parameters still get their gradients.
  EXPECT_FALSE(combo::nn::checkpoint_applies({x, pos}));
  at::Tensor y = combo::nn::checkpoint(fn, {x, pos});
  ASSERT_NE(y.grad_fn(), nullptr);
  EXPECT_EQ(y.grad_fn()->name().find("CheckpointFunction"), std::string::npos);
  y.sum().backward();
  EXPECT_TRUE(net.fc1->weight.grad().defined());
  EXPECT_EQ(net.calls, 2);  // once under no_grad, once here: never recomputed
}

namespace {

// Forward under `autocast`, backward after leaving it (as the trainer does), once directly and
// once checkpointed, on `device`: outputs, input and parameter gradients must agree to `tol`
// (0 = bit-identical); autocast must change the result (or the test could not see a
// recomputation in the wrong precision).
void expect_autocast_checkpoint_matches_direct(const at::Device& device,
                                               const combo::AutocastState& autocast, double tol) {
  auto direct = std::make_shared<Net>();
  auto ckpt = std::make_shared<Net>();
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < direct->parameters().size(); ++i)
      ckpt->parameters()[i].copy_(direct->parameters()[i]);
  }
  direct->to(device);
  ckpt->to(device);
  const at::Tensor x0 = torch::randn({6, 5, 12}).to(device);
  const at::Tensor pos0 = torch::randn({6, 5, 12}).to(device);
  auto run = [&](Net& net, bool checkpointed, bool with_autocast = true) {
    at::Tensor x = x0.clone().requires_grad_(true);
    at::Tensor pos = pos0.clone().requires_grad_(true);
    torch::manual_seed(5);
    at::Tensor y;
    {
      combo::AutocastScope scope(with_autocast ? autocast : combo::AutocastState());
      if (checkpointed) {
        EXPECT_TRUE(combo::nn::checkpoint_applies({x, pos}));
        y = combo::nn::checkpoint(
            [&net](const std::vector<at::Tensor>& in) { return net.forward(in[0], in[1]); },
            {x, pos});
      } else {
        y = net.forward(x, pos);
      }
    }
    y.to(at::kFloat).pow(2).sum().backward();
    return std::make_tuple(y.detach(), x.grad(), pos.grad());
  };
  auto [y_f, gx_f, gp_f] = run(*direct, false, /*with_autocast=*/false);
  for (auto& p : direct->parameters()) p.mutable_grad() = at::Tensor();
  auto [y_d, gx_d, gp_d] = run(*direct, false);
  auto [y_c, gx_c, gp_c] = run(*ckpt, true);
  EXPECT_EQ(ckpt->calls, 2) << "the checkpointed forward runs again in backward";
  EXPECT_FALSE(torch::allclose(gx_f.cpu(), gx_d.cpu(), 1e-6, 1e-7))
      << "autocast did not change the gradients: this test could not see a wrong recomputation";
  auto same = [tol](const at::Tensor& a, const at::Tensor& b) {
    return tol == 0 ? combo::testing::tensors_equal(a, b)
                    : combo::testing::tensors_near_rel(a, b, tol);
  };
  EXPECT_TRUE(same(y_d, y_c));
  EXPECT_TRUE(same(gx_d, gx_c));
  EXPECT_TRUE(same(gp_d, gp_c));
  for (size_t i = 0; i < direct->parameters().size(); ++i) {
    ASSERT_TRUE(ckpt->parameters()[i].grad().defined()) << "parameter " << i;
    EXPECT_TRUE(same(direct->parameters()[i].grad(), ckpt->parameters()[i].grad()))
        << "parameter " << i;
  }
}

}  // namespace

TEST_F(CheckpointTest, UnderCpuAutocastRecomputesInTheForwardCallsPrecision) {
  // The backward pass runs outside the autocast region: without replaying the forward call's
  // autocast state the recomputation would run in float32 and the gradients would differ.
  combo::AutocastState bf16;
  bf16.cpu_enabled = true;
  bf16.cpu_dtype = at::kBFloat16;
  expect_autocast_checkpoint_matches_direct(at::kCPU, bf16, 0.0);
}

TEST(CheckpointCuda, UnderFp16AndBf16AutocastGradientsEqualTheDirectCall) {
  COMBO_CUDA_OR_SKIP(device);
  combo::seed_everything(0);
  for (const auto dtype : {at::kHalf, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    combo::AutocastState s;
    s.cuda_enabled = true;
    s.cuda_dtype = dtype;
    // cuBLAS picks the same kernels for the same shapes: equal to rounding at most.
    expect_autocast_checkpoint_matches_direct(device, s, 1e-6);
  }
}
