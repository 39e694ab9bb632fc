// Fused score-optimizer step on the CPU (OpenMP): the AdamW update of the
// scores (torch.optim.AdamW arithmetic, fp32) and, in the same pass, the
// histogram of the top digit of the updated scores' order-preserving keys --
// the first pass of the next threshold search (csrc/cpu/select.cpp).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "tamt/common.h"
#include "tamt/kernels.h"

namespace tamt {
namespace cpu {

namespace {

constexpr int64_t kTile = 512;
constexpr int kCopies = 4;  // interleaved sub-histograms per segment (see update_tile)

// One tile: the update, then the histogram of the tile while it is in L1.
// Written for the vectorizer (a scalar loop calling sqrtf/fmaf ran ~5x slower
// than torch's fused AdamW): the lerp's branch (torch's two lerp formulas,
// chosen by the weight) is a loop-invariant select, sqrt and fma are
// builtins (library calls cannot be inlined into the AVX2 clone, and this
// file is compiled with -fno-math-errno), the order-preserving keys are
// computed in a vectorizable loop, and the counts go to kCopies interleaved
// sub-histograms: neighbouring scores fall in the same bin, and one counter
// incremented back to back serializes on store-to-load forwarding.  Same
// arithmetic as adamw_update (common.h), element by element.  Cloned for
// x86-64-v3 (AVX2 + FMA, Intel or AMD; "arch=haswell" dispatched on the CPU
// model, so AMD CPUs ran the scalar default), picked at load time.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
void update_tile(const AdamWCoeffs& c, float* __restrict p, const float* __restrict g, float* __restrict m,
                 float* __restrict v, int64_t n, uint32_t* __restrict h, int nb, int shift) {
  const float decay = c.decay, w = c.lerp_weight, b2 = c.beta2, omb2 = c.one_minus_beta2;
  const float bc2 = c.bc2_sqrt, eps = c.eps, nss = c.neg_step_size;
  // torch's lerp: m + w*(g - m) for |w| < 0.5, else g - (1 - w)*(g - m); the choice is loop-invariant
  const bool near_m = w < 0.5f && w > -0.5f;
  const float a = near_m ? w : w - 1.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i], mo = m[i];
    const float mi = __builtin_fmaf(a, gi - mo, near_m ? mo : gi);
    float vi = v[i] * b2;
    vi = vi + omb2 * gi * gi;
    const float denom = __builtin_sqrtf(vi) / bc2 + eps;
    const float pi = p[i] * decay;
    p[i] = pi + nss * (mi / denom);
    m[i] = mi;
    v[i] = vi;
  }
  uint32_t digit[kTile];
  for (int64_t i = 0; i < n; ++i) {  // f32_bits_to_key, spelled out so that it vectorizes here
    uint32_t b;
    std::memcpy(&b, p + i, 4);  // (not a pointer cast: float storage read as uint32 breaks aliasing rules)
    const uint32_t key = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    digit[i] = (((b & 0x7fffffffu) > 0x7f800000u) ? 0xffffffffu : key) >> shift;
  }
  int64_t i = 0;
  for (; i + kCopies <= n; i += kCopies)
    for (int k = 0; k < kCopies; ++k) ++h[k * nb + digit[i + k]];
  for (; i < n; ++i) ++h[digit[i]];
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
    std::vector<uint32_t> local(static_cast<size_t>(nseg) * kCopies * nb, 0);
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t it = 0; it < nitems; ++it) {
      const Item w = items[it];
      float* p = reinterpret_cast<float*>(scores[w.seg]);
      const float* g = reinterpret_cast<const float*>(grads[w.seg]);
      float* m = reinterpret_cast<float*>(exp_avg[w.seg]);
      float* v = reinterpret_cast<float*>(exp_avg_sq[w.seg]);
      uint32_t* h = &local[w.seg * kCopies * nb];
      for (int64_t t0 = w.begin; t0 < w.end; t0 += kTile) {
        const int64_t t1 = std::min(w.end, t0 + kTile);
        update_tile(c, p + t0, g + t0, m + t0, v + t0, t1 - t0, h, nb, shift);
      }
    }
#pragma omp critical
    for (int64_t sg = 0; sg < nseg; ++sg)
      for (int k = 0; k < kCopies; ++k)
        for (int b = 0; b < nb; ++b) hist[sg * nb + b] += local[(sg * kCopies + k) * nb + b];
  }
}

}  // namespace cpu
}  // namespace tamt
