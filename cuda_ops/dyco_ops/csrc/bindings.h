// What the CPU (cpu_ops.cpp) and CUDA (cuda_bindings.cpp) extensions bind alike: each file
// defines these ops under the same names, so both modules expose one interface.
#pragma once

#include <torch/extension.h>

// The kernels touch no Python objects: they release the GIL, so blocks segmented side by side
// on several threads (TilingConfig.workers) run them at the same time.
using NoGil = py::call_guard<py::gil_scoped_release>;

// A macro, not a function: each file's ops live in its own anonymous namespace.
#define DYCO_BIND_SHARED_OPS(m)                                                                 \
  m.def("voxelize", &voxelize, "unique voxels (lexicographic) and point -> voxel index",       \
        NoGil());                                                                               \
  m.def("scatter_mean", &scatter_mean, "segment mean (+ counts)", NoGil());                     \
  m.def("scatter_max", &scatter_max, "segment max, empty segments 0", NoGil());                 \
  m.def("connected_components", &connected_components, "radius graph components per label",   \
        NoGil());                                                                               \
  m.def("mask_iou", &mask_iou, "pairwise IoU of bool masks", NoGil());                          \
  m.def("furthest_point_sample", &furthest_point_sample, "FPS per scene (grouped positions)",  \
        NoGil());                                                                               \
  m.def("ball_query", &ball_query, "first k in-radius positions per query, -1 padded",         \
        NoGil());                                                                               \
  m.def("box_iou_3d", &box_iou_3d, "pairwise IoU of axis-aligned 3D boxes", NoGil());           \
  m.def("otsu_threshold", &otsu_threshold, "per-segment Otsu threshold", NoGil());              \
  m.def("ln_nms", &ln_nms, "DKNet local-normalised NMS per scene, -1 padded", NoGil())
