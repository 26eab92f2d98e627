// Neighbour table of the submanifold 3x3x3 conv, built on the CPU from voxel coordinates.
#pragma once

#include <torch/extension.h>

namespace dyco {

// coords (V, 4) int64 rows (batch, x, y, z), unique, batch in [0, 2^15), x, y, z in
// [0, 2^16 - 3] (the limits of sparse/tensor.py's key packing) -> (V, 27) int64 where
// entry [i, k] is the row j with coords[j] = coords[i] + offset k, or V when there is none;
// offset k = (dx + 1) * 9 + (dy + 1) * 3 + (dz + 1), so column 13 (the centre) is i.
torch::Tensor subm_neighbour_table(const torch::Tensor& coords);

}  // namespace dyco
