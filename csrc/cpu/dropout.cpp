// Dropout on the CPU with a counter-based generator (Philox4x32-10, Salmon et
// al., SC'11 -- the generator of cuRAND and of torch's CUDA dropout).
//
// Why: torch's CPU dropout draws a Bernoulli per element from a sequential
// generator (~18 ns per element); in a BERT search step the student's
// attention-probability and hidden-state dropouts are ~30M elements, about a
// third of the step's CPU time. Philox maps (key, counter) to 4 random words
// with no state, so
//   * every element's keep bit is a pure function of (seed, element index):
//     any thread count and any chunking give the same result,
//   * the backward pass regenerates the mask instead of storing it:
//     dx = dropout(dy) with the same seed has bit for bit the same keep bits.
//
// Layout: elements come in groups of 32 (i0 = i & ~31, j = i & 31). Element i
// uses word j / 8 of the Philox block with counter ((i0 >> 2) + j % 8, 0, 0, 0)
// and key (seed & 0xffffffff, seed >> 32): 8 blocks side by side fill the 8
// lanes of an AVX2 register and their words land in element order. An element
// is kept when its word >= threshold = round(p * 2^32) (P(drop) = p to 2^-32);
// kept elements are scaled by 1 / (1 - p) like torch.nn.functional.dropout.
// The AVX2 path (picked at run time) and the scalar path compute the same bits;
// tests/native/test_dropout.py checks both against a Python Philox and the
// Random123 known-answer vectors.
#include <omp.h>

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TAMT_X86 1
#endif

#include "tamt/kernels.h"

namespace tamt {
namespace cpu {

namespace {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
constexpr int kLanes = 8;                 // blocks per group
constexpr int kGroup = 4 * kLanes;        // elements per group (32)
constexpr int64_t kChunk = kGroup * 128;  // elements per OpenMP work item (4,096)

inline void philox_block(uint64_t b, uint32_t k0, uint32_t k1, uint32_t out[4]) {
  uint32_t c0 = static_cast<uint32_t>(b), c1 = static_cast<uint32_t>(b >> 32), c2 = 0, c3 = 0;
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0, p1 = static_cast<uint64_t>(kM1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += kW0;
    k1 += kW1;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// Elements [i0, i0 + n) of one group, n <= kGroup.
inline void group_scalar(const float* x, float* y, int64_t i0, int n, uint32_t thr, float scale, uint32_t k0,
                         uint32_t k1) {
  uint32_t r[kLanes][4];
  for (int l = 0; l < kLanes; ++l) philox_block((static_cast<uint64_t>(i0) >> 2) + l, k0, k1, r[l]);
  for (int j = 0; j < n; ++j) y[i0 + j] = r[j % kLanes][j / kLanes] >= thr ? x[i0 + j] * scale : 0.0f;
}

void chunk_scalar(const float* x, float* y, int64_t start, int64_t end, uint32_t thr, float scale, uint32_t k0,
                  uint32_t k1) {
  for (int64_t i0 = start; i0 < end; i0 += kGroup) {
    const int n = static_cast<int>(end - i0 < kGroup ? end - i0 : kGroup);
    group_scalar(x, y, i0, n, thr, scale, k0, k1);
  }
}

#ifdef TAMT_X86
// 32x32 -> 64 products of the 8 lanes of a with the constant m: the low and high words.
__attribute__((target("avx2"))) inline __m256i mulhilo(__m256i a, __m256i m, __m256i* hi) {
  const __m256i even = _mm256_mul_epu32(a, m);                         // lanes 0, 2, 4, 6 as 64-bit products
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);  // lanes 1, 3, 5, 7
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

__attribute__((target("avx2"))) void chunk_avx2(const float* x, float* y, int64_t start, int64_t end, uint32_t thr,
                                                float scale, uint32_t k0, uint32_t k1) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kM0)), m1 = _mm256_set1_epi32(static_cast<int>(kM1));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  // r >= thr  <=>  (r ^ sign) > ((thr - 1) ^ sign) as signed ints (thr >= 1 here)
  const __m256i lim = _mm256_set1_epi32(static_cast<int>((thr - 1u) ^ 0x80000000u));
  const __m256 vscale = _mm256_set1_ps(scale);
  int64_t i0 = start;
  for (; i0 + kGroup <= end; i0 += kGroup) {
    const uint64_t b0 = static_cast<uint64_t>(i0) >> 2;
    // the 8 blocks' counters: b0 + l never wraps the low word inside a group (b0 % 8 == 0)
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(b0))), lane);
    __m256i c1 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(b0 >> 32)));
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    uint32_t ka = k0, kb = k1;
    for (int r = 0; r < 10; ++r) {
      __m256i hi0, hi1;
      const __m256i lo0 = mulhilo(c0, m0, &hi0);
      const __m256i lo1 = mulhilo(c2, m1, &hi1);
      const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(ka)));
      const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(kb)));
      c1 = lo1;
      c3 = lo0;
      c0 = n0;
      c2 = n2;
      ka += kW0;
      kb += kW1;
    }
    const __m256i words[4] = {c0, c1, c2, c3};
    for (int w = 0; w < 4; ++w) {
      const __m256i keep = _mm256_cmpgt_epi32(_mm256_xor_si256(words[w], sign), lim);
      const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i0 + kLanes * w), vscale);
      _mm256_storeu_ps(y + i0 + kLanes * w, _mm256_and_ps(v, _mm256_castsi256_ps(keep)));
    }
  }
  if (i0 < end) group_scalar(x, y, i0, static_cast<int>(end - i0), thr, scale, k0, k1);
}
#endif

}  // namespace

void philox_dropout(const float* x, float* y, int64_t n, double p, uint64_t seed, bool force_scalar) {
  // threshold = round(p * 2^32), at least 1 for p > 0 (p = 0 keeps everything: threshold 0)
  const double t = p * 4294967296.0 + 0.5;
  uint32_t thr = t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
  if (p > 0.0 && thr == 0) thr = 1;
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  bool vec = false;
#ifdef TAMT_X86
  vec = !force_scalar && thr > 0 && __builtin_cpu_supports("avx2");
#endif
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t start = c * kChunk;
    const int64_t end = start + kChunk < n ? start + kChunk : n;
#ifdef TAMT_X86
    if (vec) {
      chunk_avx2(x, y, start, end, thr, scale, k0, k1);
      continue;
    }
#endif
    chunk_scalar(x, y, start, end, thr, scale, k0, k1);
  }
  (void)vec;
}

}  // namespace cpu
}  // namespace tamt
