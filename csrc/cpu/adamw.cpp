// Fused score-optimizer step on the CPU (OpenMP): the AdamW update of the
// scores (torch.optim.AdamW arithmetic, fp32) and, in the same pass, the
// histogram of the top digit of the updated scores' order-preserving keys --
// the first pass of the next threshold search (csrc/cpu/select.cpp).
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "tamt/common.h"
#include "tamt/kernels.h"

namespace tamt {
namespace cpu {

namespace {

// One tile: the update (vectorizable), then the histogram of the tile while it
// is in L1. Cloned for FMA-capable x86 CPUs (picked at load time), so the
// lerp's fused multiply-add is one instruction instead of a libm call.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("arch=haswell", "default")))
#endif
void update_tile(const AdamWCoeffs& c, float* __restrict p, const float* __restrict g, float* __restrict m,
                 float* __restrict v, int64_t n, uint32_t* __restrict h, int shift) {
  for (int64_t i = 0; i < n; ++i) adamw_update(c, g[i], p[i], m[i], v[i]);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, p + i, 4);
    ++h[f32_bits_to_key(b) >> shift];
  }
}

}  // namespace

void adamw_scores_step(int64_t nseg, const int64_t* scores, const int64_t* grads,
                       const int64_t* exp_avg, const int64_t* exp_avg_sq, const int64_t* sizes,
                       const AdamWScalars& hp, int64_t* hist, int hist_bits) {
  if (hist_bits < kMinFirstBits || hist_bits > kMaxFirstBits)
    throw std::invalid_argument("tamt native adamw_scores_step: hist_bits must be in [4, 12]");
  const AdamWCoeffs c = make_adamw_coeffs(hp);
  const int nb = 1 << hist_bits;
  const int shift = 32 - hist_bits;
  constexpr int64_t kChunk = 1 << 15;
  constexpr int64_t kTile = 512;

  struct Item {
    int64_t seg, begin, end;
  };
  std::vector<Item> items;
  for (int64_t s = 0; s < nseg; ++s)
    for (int64_t b = 0; b < sizes[s]; b += kChunk) items.push_back({s, b, std::min(sizes[s], b + kChunk)});
  const int64_t nitems = static_cast<int64_t>(items.size());
  std::fill(hist, hist + nseg * nb, 0);
  int64_t total = 0;
  for (int64_t s = 0; s < nseg; ++s) total += sizes[s];

#pragma omp parallel if (total >= (int64_t(1) << 17))
  {
    std::vector<uint32_t> local(static_cast<size_t>(nseg) * nb, 0);
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t it = 0; it < nitems; ++it) {
      const Item w = items[it];
      float* p = reinterpret_cast<float*>(scores[w.seg]);
      const float* g = reinterpret_cast<const float*>(grads[w.seg]);
      float* m = reinterpret_cast<float*>(exp_avg[w.seg]);
      float* v = reinterpret_cast<float*>(exp_avg_sq[w.seg]);
      uint32_t* h = &local[w.seg * nb];
      for (int64_t t0 = w.begin; t0 < w.end; t0 += kTile) {
        const int64_t t1 = std::min(w.end, t0 + kTile);
        update_tile(c, p + t0, g + t0, m + t0, v + t0, t1 - t0, h, shift);
      }
    }
#pragma omp critical
    for (size_t j = 0; j < local.size(); ++j) hist[j] += local[j];
  }
}

}  // namespace cpu
}  // namespace tamt
