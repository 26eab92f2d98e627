// C++ CPU kernels of dyco_ops. Semantics are defined by dyco_ops/reference.py; inputs are
// validated (shape, dtype, ranges) by the Python wrappers in dyco_ops/ops.py.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <limits>
#include <numeric>
#include <tuple>
#include <vector>

#include "bindings.h"
#include "check.h"
#include "common.h"
#include "dynamic_decode.h"
#include "neighbour_table.h"
#include "subm_conv.h"

namespace {

using Triple = std::array<int64_t, 3>;

// ---------------------------------------------------------------- voxelize

// Fast path: coordinates packed into one int64 (extent permits), keys stored in the table.
bool voxelize_packed(const int64_t* c, int64_t n, int64_t* inv, std::vector<Triple>& sorted) {
  Triple lo{c[0], c[1], c[2]}, hi = lo;
  for (int64_t i = 0; i < n; ++i)
    for (int d = 0; d < 3; ++d) {
      lo[d] = std::min(lo[d], c[3 * i + d]);
      hi[d] = std::max(hi[d], c[3 * i + d]);
    }
  // Spans below 2^20 each keep the packed key below 2^60 (unsigned: no overflow on the span).
  for (int d = 0; d < 3; ++d)
    if (static_cast<uint64_t>(hi[d]) - static_cast<uint64_t>(lo[d]) >= (uint64_t{1} << 20))
      return false;
  const int64_t sy = hi[1] - lo[1] + 1, sz = hi[2] - lo[2] + 1;
  const int64_t cap = dyco::table_capacity(n);
  std::vector<int64_t> slot_key(cap, -1), slot_id(cap);
  std::vector<int64_t> unique_keys;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t key =
        ((c[3 * i] - lo[0]) * sy + (c[3 * i + 1] - lo[1])) * sz + (c[3 * i + 2] - lo[2]);
    uint64_t slot = dyco::mix64(static_cast<uint64_t>(key)) & (cap - 1);
    while (slot_key[slot] >= 0 && slot_key[slot] != key) slot = (slot + 1) & (cap - 1);
    if (slot_key[slot] < 0) {
      slot_key[slot] = key;
      slot_id[slot] = static_cast<int64_t>(unique_keys.size());
      unique_keys.push_back(key);
    }
    inv[i] = slot_id[slot];
  }
  // Packed keys order like (x, y, z) tuples: sorting them sorts the voxels lexicographically.
  const int64_t v = static_cast<int64_t>(unique_keys.size());
  std::vector<int64_t> order(v), rank(v);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int64_t a, int64_t b) { return unique_keys[a] < unique_keys[b]; });
  sorted.resize(v);
  for (int64_t r = 0; r < v; ++r) {
    const int64_t key = unique_keys[order[r]];
    rank[order[r]] = r;
    sorted[r] = {key / (sy * sz) + lo[0], (key / sz) % sy + lo[1], key % sz + lo[2]};
  }
  for (int64_t i = 0; i < n; ++i) inv[i] = rank[inv[i]];
  return true;
}

// General path: any int64 coordinates, triples compared in the table.
void voxelize_triples(const int64_t* c, int64_t n, int64_t* inv, std::vector<Triple>& sorted) {
  const int64_t cap = dyco::table_capacity(n);
  std::vector<int64_t> table(cap, -1);
  std::vector<Triple> voxels;
  for (int64_t i = 0; i < n; ++i) {
    const Triple key{c[3 * i], c[3 * i + 1], c[3 * i + 2]};
    uint64_t slot = dyco::hash4(key[0], key[1], key[2], 0) & (cap - 1);
    while (table[slot] >= 0 && voxels[table[slot]] != key) slot = (slot + 1) & (cap - 1);
    if (table[slot] < 0) {
      table[slot] = static_cast<int64_t>(voxels.size());
      voxels.push_back(key);
    }
    inv[i] = table[slot];
  }
  const int64_t v = static_cast<int64_t>(voxels.size());
  std::vector<int64_t> order(v), rank(v);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int64_t a, int64_t b) { return voxels[a] < voxels[b]; });
  sorted.resize(v);
  for (int64_t r = 0; r < v; ++r) {
    rank[order[r]] = r;
    sorted[r] = voxels[order[r]];
  }
  for (int64_t i = 0; i < n; ++i) inv[i] = rank[inv[i]];
}

std::tuple<torch::Tensor, torch::Tensor> voxelize(const torch::Tensor& coords_in) {
  DYCO_CHECK(coords_in.dim() == 2 && coords_in.size(1) == 3, "coords must be (N, 3)");
  const auto coords = coords_in.to(torch::kInt64).contiguous();
  const int64_t n = coords.size(0);
  auto inverse = torch::empty({n}, coords.options());
  std::vector<Triple> sorted;
  const int64_t* c = coords.data_ptr<int64_t>();
  int64_t* inv = inverse.data_ptr<int64_t>();
  if (n > 0 && !voxelize_packed(c, n, inv, sorted)) voxelize_triples(c, n, inv, sorted);
  const int64_t v = static_cast<int64_t>(sorted.size());
  auto out = torch::empty({v, 3}, coords.options());
  std::copy(sorted.begin(), sorted.end(), reinterpret_cast<Triple*>(out.data_ptr<int64_t>()));
  return {out, inverse};
}

// ---------------------------------------------------------------- scatter reductions

std::tuple<torch::Tensor, torch::Tensor> scatter_mean(const torch::Tensor& values,
                                                      const torch::Tensor& index,
                                                      int64_t num_segments) {
  const int64_t n = values.size(0), ch = values.size(1);
  auto out = torch::zeros({num_segments, ch}, values.options());
  auto counts = torch::zeros({num_segments}, index.options());
  const int64_t* idx = index.data_ptr<int64_t>();
  int64_t* cnt = counts.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) ++cnt[idx[i]];
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "scatter_mean_cpu", [&] {
    const scalar_t* val = values.data_ptr<scalar_t>();
    scalar_t* res = out.data_ptr<scalar_t>();
    // Accumulate in double, per channel block in parallel (each thread owns its columns).
    at::parallel_for(0, ch, 1, [&](int64_t c0, int64_t c1) {
      std::vector<double> acc(num_segments * (c1 - c0), 0.0);
      const int64_t width = c1 - c0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t c = c0; c < c1; ++c) acc[idx[i] * width + c - c0] += val[i * ch + c];
      for (int64_t s = 0; s < num_segments; ++s)
        for (int64_t c = c0; c < c1; ++c)
          res[s * ch + c] = static_cast<scalar_t>(acc[s * width + c - c0] /
                                                  static_cast<double>(std::max<int64_t>(cnt[s], 1)));
    });
  });
  return {out, counts};
}

torch::Tensor scatter_max(const torch::Tensor& values, const torch::Tensor& index,
                          int64_t num_segments) {
  const int64_t n = values.size(0), ch = values.size(1);
  auto out = torch::zeros({num_segments, ch}, values.options());
  const int64_t* idx = index.data_ptr<int64_t>();
  std::vector<char> seen(num_segments, 0);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "scatter_max_cpu", [&] {
    const scalar_t* val = values.data_ptr<scalar_t>();
    scalar_t* res = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) {
      scalar_t* row = res + idx[i] * ch;
      const scalar_t* src = val + i * ch;
      if (!seen[idx[i]]) {
        std::copy(src, src + ch, row);
        seen[idx[i]] = 1;
        continue;
      }
      for (int64_t c = 0; c < ch; ++c) {
        // NaN wins, as in torch.amax.
        if (!std::isnan(row[c]) && (std::isnan(src[c]) || src[c] > row[c])) row[c] = src[c];
      }
    }
  });
  return out;
}

// ---------------------------------------------------------------- connected components

struct CellKey {
  int64_t label, x, y, z;
  bool operator==(const CellKey& o) const {
    return label == o.label && x == o.x && y == o.y && z == o.z;
  }
  bool operator<(const CellKey& o) const {
    return std::tie(label, x, y, z) < std::tie(o.label, o.x, o.y, o.z);
  }
};

class CellTable {
 public:
  explicit CellTable(int64_t expected) : cap_(dyco::table_capacity(expected)), slots_(cap_, -1) {}

  // Cell id of `key`, inserting it when `insert` is set; -1 when absent.
  int64_t find(const CellKey& key, bool insert) {
    uint64_t slot = dyco::hash4(key.label, key.x, key.y, key.z) & (cap_ - 1);
    while (slots_[slot] >= 0) {
      if (keys_[slots_[slot]] == key) return slots_[slot];
      slot = (slot + 1) & (cap_ - 1);
    }
    if (!insert) return -1;
    slots_[slot] = static_cast<int64_t>(keys_.size());
    keys_.push_back(key);
    return slots_[slot];
  }
  const std::vector<CellKey>& keys() const { return keys_; }

 private:
  int64_t cap_;
  std::vector<int64_t> slots_;
  std::vector<CellKey> keys_;
};

class UnionFind {
 public:
  explicit UnionFind(int64_t n) : parent_(n) { std::iota(parent_.begin(), parent_.end(), 0); }
  int64_t find(int64_t x) {
    while (parent_[x] != x) {
      parent_[x] = parent_[parent_[x]];  // path halving
      x = parent_[x];
    }
    return x;
  }
  void unite(int64_t a, int64_t b) {
    a = find(a);
    b = find(b);
    if (a != b) parent_[std::max(a, b)] = std::min(a, b);
  }

 private:
  std::vector<int64_t> parent_;
};

// True when some point of cell a is within the radius of some point of cell b; `q` holds the
// coordinates of the valid points grouped by cell (rows a0..a1 and b0..b1).
bool cells_touch(const double* q, int64_t a0, int64_t a1, int64_t b0, int64_t b1,
                 double radius_sq) {
  for (int64_t i = a0; i < a1; ++i) {
    for (int64_t j = b0; j < b1; ++j) {
      const double dx = q[3 * i] - q[3 * j], dy = q[3 * i + 1] - q[3 * j + 1],
                   dz = q[3 * i + 2] - q[3 * j + 2];
      if (dx * dx + dy * dy + dz * dz <= radius_sq) return true;
    }
  }
  return false;
}

torch::Tensor connected_components(const torch::Tensor& points_in, const torch::Tensor& labels_in,
                                   double radius) {
  const auto points = points_in.to(torch::kFloat64).contiguous();
  const auto labels = labels_in.to(torch::kInt64).contiguous();
  const int64_t n = points.size(0);
  const double* p = points.data_ptr<double>();
  const int64_t* lab = labels.data_ptr<int64_t>();
  auto result = torch::full({n}, -1, labels.options());
  const double cell = dyco::cell_size(radius);

  // Bucket valid points into cells; every cell is internally connected.
  CellTable table(n);
  std::vector<int64_t> cell_of(n, -1);
  for (int64_t i = 0; i < n; ++i) {
    if (lab[i] < 0) continue;
    const CellKey key{lab[i], static_cast<int64_t>(std::floor(p[3 * i] / cell)),
                      static_cast<int64_t>(std::floor(p[3 * i + 1] / cell)),
                      static_cast<int64_t>(std::floor(p[3 * i + 2] / cell))};
    cell_of[i] = table.find(key, true);
  }
  // Renumber cells in lexicographic key order: neighbour search below is a merge-join.
  const int64_t num_cells = static_cast<int64_t>(table.keys().size());
  std::vector<int64_t> by_key(num_cells), rank(num_cells);
  std::iota(by_key.begin(), by_key.end(), 0);
  std::sort(by_key.begin(), by_key.end(), [&](int64_t a, int64_t b) {
    return table.keys()[a] < table.keys()[b];
  });
  std::vector<CellKey> keys(num_cells);
  for (int64_t c = 0; c < num_cells; ++c) {
    rank[by_key[c]] = c;
    keys[c] = table.keys()[by_key[c]];
  }
  // Group the coordinates by cell (counting sort) for cache-friendly pair checks.
  std::vector<int64_t> start(num_cells + 1, 0);
  for (int64_t i = 0; i < n; ++i)
    if (cell_of[i] >= 0) ++start[(cell_of[i] = rank[cell_of[i]]) + 1];
  for (int64_t c = 0; c < num_cells; ++c) start[c + 1] += start[c];
  std::vector<double> grouped(3 * start[num_cells]);
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  for (int64_t i = 0; i < n; ++i)
    if (cell_of[i] >= 0) std::copy(p + 3 * i, p + 3 * i + 3, &grouped[3 * fill[cell_of[i]]++]);

  // Link neighbouring cells (half of the 5x5x5 neighbourhood) that have a close point pair.
  // For a row offset (dx, dy) the cells z-2..z+2 of that row are contiguous in key order, and
  // adding an offset preserves that order: each row offset is one merge-join over the cells.
  UnionFind sets(num_cells);
  const double radius_sq = radius * radius;
  const int r = dyco::kNeighbourReach;
  for (int dx = 0; dx <= r; ++dx)
    for (int dy = -r; dy <= r; ++dy) {
      if (dx == 0 && dy < 0) continue;
      const int z_from = (dx == 0 && dy == 0) ? 1 : -r;  // row (0,0): only cells above
      int64_t b = 0;
      for (int64_t a = 0; a < num_cells; ++a) {
        const CellKey& ka = keys[a];
        const CellKey first{ka.label, ka.x + dx, ka.y + dy, ka.z + z_from};
        while (b < num_cells && keys[b] < first) ++b;
        for (int64_t c = b; c < num_cells; ++c) {
          const CellKey& kc = keys[c];
          if (kc.label != ka.label || kc.x != first.x || kc.y != first.y || kc.z > ka.z + r) break;
          if (sets.find(a) != sets.find(c) &&
              cells_touch(grouped.data(), start[a], start[a + 1], start[c], start[c + 1],
                          radius_sq))
            sets.unite(a, c);
        }
      }
    }
  // Number components by their smallest point index.
  std::vector<int64_t> component_of_root(num_cells, -1);
  int64_t next = 0;
  int64_t* res = result.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (cell_of[i] < 0) continue;
    const int64_t root = sets.find(cell_of[i]);
    if (component_of_root[root] < 0) component_of_root[root] = next++;
    res[i] = component_of_root[root];
  }
  return result;
}

// ---------------------------------------------------------------- mask IoU / NMS

struct PackedMasks {
  int64_t words;
  std::vector<uint64_t> bits;  // (K, words)
  std::vector<int64_t> area;
};

PackedMasks pack_masks(const torch::Tensor& masks_in) {
  const auto masks = masks_in.contiguous();
  const int64_t k = masks.size(0), n = masks.size(1);
  PackedMasks packed{(n + 63) / 64, {}, std::vector<int64_t>(k, 0)};
  packed.bits.assign(k * packed.words, 0);
  const bool* m = masks.data_ptr<bool>();
  at::parallel_for(0, k, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t r = k0; r < k1; ++r) {
      uint64_t* row = packed.bits.data() + r * packed.words;
      for (int64_t i = 0; i < n; ++i)
        if (m[r * n + i]) row[i >> 6] |= uint64_t{1} << (i & 63);
      for (int64_t w = 0; w < packed.words; ++w) packed.area[r] += __builtin_popcountll(row[w]);
    }
  });
  return packed;
}

float packed_iou(const PackedMasks& pm, int64_t a, int64_t b) {
  const uint64_t* ra = pm.bits.data() + a * pm.words;
  const uint64_t* rb = pm.bits.data() + b * pm.words;
  int64_t inter = 0;
  for (int64_t w = 0; w < pm.words; ++w) inter += __builtin_popcountll(ra[w] & rb[w]);
  const int64_t uni = pm.area[a] + pm.area[b] - inter;
  return uni > 0 ? static_cast<float>(static_cast<double>(inter) / static_cast<double>(uni))
                 : 0.0f;
}

torch::Tensor mask_iou(const torch::Tensor& masks) {
  const int64_t k = masks.size(0);
  const PackedMasks pm = pack_masks(masks);
  auto out = torch::empty({k, k}, torch::TensorOptions().dtype(torch::kFloat32));
  float* o = out.data_ptr<float>();
  at::parallel_for(0, k, 1, [&](int64_t a0, int64_t a1) {
    for (int64_t a = a0; a < a1; ++a)
      for (int64_t b = a; b < k; ++b) o[a * k + b] = o[b * k + a] = packed_iou(pm, a, b);
  });
  return out;
}

torch::Tensor mask_nms(const torch::Tensor& masks, const torch::Tensor& scores_in,
                       double iou_threshold) {
  const int64_t k = masks.size(0);
  const auto scores = scores_in.to(torch::kFloat64).contiguous();
  const double* s = scores.data_ptr<double>();
  std::vector<int64_t> order(k);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s[a] > s[b]; });
  const PackedMasks pm = pack_masks(masks);
  // IoU is float32 and compared with the threshold in float32, exactly as the reference.
  const float threshold = static_cast<float>(iou_threshold);
  std::vector<char> suppressed(k, 0);
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < k; ++i) {
    if (suppressed[i]) continue;
    kept.push_back(order[i]);
    for (int64_t j = i + 1; j < k; ++j)
      if (!suppressed[j] && packed_iou(pm, order[i], order[j]) > threshold) suppressed[j] = 1;
  }
  return torch::tensor(kept, torch::TensorOptions().dtype(torch::kInt64));
}

// ---------------------------------------------------------------- decoder ops
// Inputs are grouped by scene by the Python wrapper: rows stably sorted by batch id, scene s
// spans positions starts[s]..starts[s+1]-1 (ascending position = ascending row), coordinates
// float64. Results are positions in that order. The arithmetic (common.h) is the reference's,
// so ties resolve identically.

// Positions chosen by furthest point sampling; scene s writes out_starts[s]..out_starts[s+1]-1.
torch::Tensor furthest_point_sample(const torch::Tensor& xyz, const torch::Tensor& starts,
                                    const torch::Tensor& out_starts, int64_t total) {
  const double* p = xyz.data_ptr<double>();
  const int64_t* st = starts.data_ptr<int64_t>();
  const int64_t* os = out_starts.data_ptr<int64_t>();
  const int64_t scenes = starts.size(0) - 1;
  auto out = torch::empty({total}, starts.options());
  int64_t* res = out.data_ptr<int64_t>();
  std::vector<double> dist(xyz.size(0));
  at::parallel_for(0, scenes, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t lo = st[s], hi = st[s + 1], take = os[s + 1] - os[s];
      if (take == 0) continue;
      // -1 marks chosen points (never re-picked); the rest hold the distance to the set.
      std::fill(dist.begin() + lo, dist.begin() + hi, std::numeric_limits<double>::infinity());
      int64_t last = lo;
      dist[lo] = -1.0;
      res[os[s]] = lo;
      for (int64_t t = 1; t < take; ++t) {
        int64_t best = -1;
        double best_d = -1.0;
        for (int64_t i = lo; i < hi; ++i) {
          if (dist[i] < 0) continue;
          const double d2 = dyco::sq_dist(p + 3 * i, p + 3 * last);
          if (d2 < dist[i]) dist[i] = d2;
          if (dist[i] > best_d) {  // strict: ties keep the lowest position
            best_d = dist[i];
            best = i;
          }
        }
        dist[best] = -1.0;
        res[os[s] + t] = last = best;
      }
    }
  });
  return out;
}

// Per query: the first k positions of lo[q]..hi[q]-1 with d2 <= radius^2, padded with -1.
std::tuple<torch::Tensor, torch::Tensor> ball_query(const torch::Tensor& query_xyz,
                                                    const torch::Tensor& lo,
                                                    const torch::Tensor& hi,
                                                    const torch::Tensor& xyz, double radius,
                                                    int64_t k) {
  const int64_t nq = query_xyz.size(0);
  auto neighbours = torch::full({nq, k}, -1, lo.options());
  auto count = torch::zeros({nq}, lo.options());
  const double* qp = query_xyz.data_ptr<double>();
  const double* p = xyz.data_ptr<double>();
  const int64_t *qlo = lo.data_ptr<int64_t>(), *qhi = hi.data_ptr<int64_t>();
  int64_t* nb = neighbours.data_ptr<int64_t>();
  int64_t* cnt = count.data_ptr<int64_t>();
  const double radius_sq = radius * radius;
  at::parallel_for(0, nq, 64, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      int64_t c = 0;
      for (int64_t i = qlo[q]; i < qhi[q] && c < k; ++i)
        if (dyco::sq_dist(qp + 3 * q, p + 3 * i) <= radius_sq) nb[q * k + c++] = i;
      cnt[q] = c;
    }
  });
  return {neighbours, count};
}

torch::Tensor box_iou_3d(const torch::Tensor& a, const torch::Tensor& b) {
  const int64_t na = a.size(0), nb = b.size(0);
  auto out = torch::empty({na, nb}, a.options());
  const double *pa = a.data_ptr<double>(), *pb = b.data_ptr<double>();
  double* o = out.data_ptr<double>();
  at::parallel_for(0, na, 16, [&](int64_t a0, int64_t a1) {
    for (int64_t i = a0; i < a1; ++i)
      for (int64_t j = 0; j < nb; ++j) o[i * nb + j] = dyco::box_iou(pa + 6 * i, pb + 6 * j);
  });
  return out;
}

torch::Tensor otsu_threshold(const torch::Tensor& values, const torch::Tensor& segment,
                             int64_t num_segments, int64_t bins) {
  const int64_t m = values.size(0);
  const double* v = values.data_ptr<double>();
  const int64_t* seg = segment.data_ptr<int64_t>();
  std::vector<int64_t> hist(num_segments * bins, 0);
  for (int64_t i = 0; i < m; ++i) ++hist[seg[i] * bins + dyco::otsu_level(v[i], bins)];
  auto out = torch::empty({num_segments}, values.options());
  double* o = out.data_ptr<double>();
  at::parallel_for(0, num_segments, 64, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) o[s] = dyco::otsu_split(hist.data() + s * bins, bins);
  });
  return out;
}

// DKNet LN-NMS over one scene (positions lo..hi-1); accepted positions go to out[0..].
void ln_nms_scene(const double* p, const double* heat, uint8_t* avail, int64_t lo, int64_t hi,
                  double radius_sq, double threshold, int64_t max_candidates, int64_t* out) {
  int64_t accepted = 0;
  while (accepted < max_candidates) {
    int64_t q = -1;
    for (int64_t i = lo; i < hi; ++i)
      if (avail[i] && (q < 0 || heat[i] > heat[q])) q = i;  // strict: ties -> lowest
    if (q < 0) return;
    double local_max = -std::numeric_limits<double>::infinity();
    for (int64_t i = lo; i < hi; ++i) {
      if (dyco::sq_dist(p + 3 * i, p + 3 * q) < radius_sq) {
        avail[i] = 0;
        local_max = std::max(local_max, heat[i]);
      }
    }
    if (local_max > 0 && heat[q] / local_max >= threshold) out[accepted++] = q;
  }
}

// (S, cap) accepted positions per scene in acceptance order, padded with -1.
torch::Tensor ln_nms(const torch::Tensor& xyz, const torch::Tensor& heat,
                     const torch::Tensor& available, const torch::Tensor& starts, double radius,
                     double threshold, int64_t max_candidates, int64_t cap) {
  const int64_t scenes = starts.size(0) - 1;
  auto out = torch::full({scenes, cap}, -1, starts.options());
  auto avail = available.clone();
  const int64_t* st = starts.data_ptr<int64_t>();
  const double *p = xyz.data_ptr<double>(), *h = heat.data_ptr<double>();
  uint8_t* av = avail.data_ptr<uint8_t>();
  int64_t* res = out.data_ptr<int64_t>();
  at::parallel_for(0, scenes, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s)
      ln_nms_scene(p, h, av, st[s], st[s + 1], radius * radius, threshold, max_candidates,
                   res + s * cap);
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dyco_ops C++ CPU kernels";
  DYCO_BIND_SHARED_OPS(m);
  m.def("mask_nms", &mask_nms, "greedy mask NMS, kept indices in score order", NoGil());
  m.def("subm_conv3d", &dyco::subm_conv3d, "output-stationary submanifold 3x3x3 conv", NoGil(),
        py::arg("features"), py::arg("table"), py::arg("weight"), py::arg("bias") = py::none());
  m.def("subm_neighbour_table", &dyco::subm_neighbour_table,
        "(V, 27) submanifold neighbour rows of (V, 4) coords, V where absent", NoGil(),
        py::arg("coords"));
  m.def("dynamic_mask_decode", &dyco::dynamic_mask_decode,
        "DyCo3D dynamic mask decoder: each proposal's MLP over its yz-boxed candidate rows",
        NoGil(), py::arg("features"), py::arg("xyz"), py::arg("order"), py::arg("starts"),
        py::arg("stops"), py::arg("box_min"), py::arg("box_max"), py::arg("centre"),
        py::arg("params"), py::arg("layer_sizes"), py::arg("use_relative_position"));
}
