#pragma once
/// Activation checkpointing: a part of the network that keeps only its inputs for backward.
///
/// checkpoint(fn, inputs) runs fn(inputs) without recording its graph, so none of its
/// intermediate tensors stay alive until backward. The backward pass runs fn again on the saved
/// inputs, with the random generator put back to its state at the forward call (stochastic
/// depth and dropout draw the same masks), and backpropagates through that recomputation into
/// the inputs and into fn's parameters. On deterministic kernels (every CPU kernel ComboAVS
/// uses) the outputs and every gradient are bit-identical to running fn directly; the price is
/// fn's forward time once more per training step. As torch.utils.checkpoint (reentrant).
///
/// Under autocast the recomputation runs with the autocast state of the forward call (the same
/// precision choices), so the gradients equal the direct call's under that autocast.
///
/// fn runs directly (nothing is saved or recomputed) when autograd is not recording or when no
/// input requires a gradient (the recomputation could not reach fn's parameters).
#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace combo::nn {

using CheckpointFn = std::function<at::Tensor(const std::vector<at::Tensor>& inputs)>;

/// fn(inputs) with its activations recomputed in backward (see above). `fn` must compute its
/// output from `inputs` and module parameters only (captured non-tensor state is fine) and be
/// callable again during backward.
at::Tensor checkpoint(const CheckpointFn& fn, const std::vector<at::Tensor>& inputs);

/// Whether checkpoint() would save and recompute for these inputs now (the opposite of the
/// direct-call cases above).
bool checkpoint_applies(const std::vector<at::Tensor>& inputs);

}  // namespace combo::nn
