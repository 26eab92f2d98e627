// DyCo3D's per-proposal dynamic mask decoder on the CPU (inference only).
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

namespace dyco {

// For each proposal k: the rows order[starts[k]:stops[k]] whose y and z lie inside
// [box_min[k], box_max[k]] (inclusive), in that order; each row's input is features[row]
// (+ xyz[row] - centre[k] when use_relative_position) and its logit that of proposal k's MLP:
// x @ W_l + b_l per layer, ReLU between layers, one output. params[k] holds W_1 (in, out)
// row-major, b_1, W_2, b_2, ... (decoders/common.py split_decoder_params).
// features (N, C), xyz (N, 3), box_min / box_max / centre (K, 3), params (K, P): float32;
// order (N,), starts / stops (K,): int64; layer_sizes: (in, out) per layer.
// -> (logits (M,) float32, points (M,) int64 rows, ids (M,) int64 proposal index), by proposal.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> dynamic_mask_decode(
    const torch::Tensor& features, const torch::Tensor& xyz, const torch::Tensor& order,
    const torch::Tensor& starts, const torch::Tensor& stops, const torch::Tensor& box_min,
    const torch::Tensor& box_max, const torch::Tensor& centre, const torch::Tensor& params,
    const std::vector<std::pair<int64_t, int64_t>>& layer_sizes, bool use_relative_position);

}  // namespace dyco
