// Output-stationary submanifold 3x3x3 sparse convolution on the CPU (inference).
#pragma once

#include <torch/extension.h>

namespace dyco {

// out[i] = bias + sum over k with table[i, k] != V of features[table[i, k]] @ weight[k].
// features (V, Cin) float32, table (V, 27) int64 or int32 with V meaning "no neighbour",
// weight (27, Cin, Cout) float32, bias (Cout,) float32 or None -> (V, Cout) float32.
torch::Tensor subm_conv3d(const torch::Tensor& features, const torch::Tensor& table,
                          const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias);

}  // namespace dyco
