// Mask kernels on the CPU (OpenMP): bit packing/unpacking and the fused
// binarize-and-mask product weight * (scores > threshold). Same element
// mapping as csrc/cuda/mask.cu: byte j of the packed mask holds elements
// 8j..8j+7, element i in bit (i & 7); pad bits of the last byte are zero.
#include <omp.h>

#include <cstring>
#include <stdexcept>

#include "tamt/common.h"
#include "tamt/kernels.h"

namespace tamt {
namespace cpu {

void pack_mask(const uint8_t* mask, int64_t n, uint8_t* packed) {
  const int64_t full = n >> 3;
#pragma omp parallel for schedule(static) if (full > (1 << 16))
  for (int64_t j = 0; j < full; ++j) {
    uint64_t x;
    std::memcpy(&x, mask + 8 * j, 8);
    packed[j] = static_cast<uint8_t>(pack8(x & 0x0101010101010101ull));
  }
  if (n & 7) {
    uint32_t v = 0;
    for (int64_t i = full * 8; i < n; ++i) v |= static_cast<uint32_t>(mask[i] != 0) << (i & 7);
    packed[full] = static_cast<uint8_t>(v);
  }
}

void unpack_mask(const uint8_t* packed, int64_t n, uint8_t* mask) {
  const int64_t full = n >> 3;
#pragma omp parallel for schedule(static) if (full > (1 << 16))
  for (int64_t j = 0; j < full; ++j) {
    uint64_t x = unpack8(packed[j]);
    std::memcpy(mask + 8 * j, &x, 8);
  }
  for (int64_t i = full * 8; i < n; ++i) mask[i] = (packed[i >> 3] >> (i & 7)) & 1u;
}

namespace {

template <int SD>
inline float score_at(const void* s, int64_t i);
template <>
inline float score_at<kFloat32>(const void* s, int64_t i) { return static_cast<const float*>(s)[i]; }
template <>
inline float score_at<kBFloat16>(const void* s, int64_t i) {
  return bf16_bits_to_float(static_cast<const uint16_t*>(s)[i]);
}
template <>
inline float score_at<kFloat16>(const void* s, int64_t i) {
  return f16_bits_to_float(static_cast<const uint16_t*>(s)[i]);
}

template <int WD, int SD>
void binarize_impl(const void* weight, const void* scores, float t, int64_t n, void* out) {
  if (WD == kFloat32 && SD == kFloat32) {
    // the common case, written so that it vectorizes (no aliasing, no branches)
    const float* __restrict w = static_cast<const float*>(weight);
    const float* __restrict s = static_cast<const float*>(scores);
    float* __restrict o = static_cast<float*>(out);
#pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) o[i] = w[i] * (s[i] > t ? 1.0f : 0.0f);
    return;
  }
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    bool keep = score_at<SD>(scores, i) > t;
    if (WD == kFloat32) {
      static_cast<float*>(out)[i] = static_cast<const float*>(weight)[i] * (keep ? 1.0f : 0.0f);
    } else {
      uint16_t w = static_cast<const uint16_t*>(weight)[i];
      static_cast<uint16_t*>(out)[i] = keep ? w : (WD == kBFloat16 ? bf16_times_zero(w) : f16_times_zero(w));
    }
  }
}

template <int WD>
void binarize_w(int s_dtype, const void* weight, const void* scores, float t, int64_t n, void* out) {
  switch (s_dtype) {
    case kFloat32: return binarize_impl<WD, kFloat32>(weight, scores, t, n, out);
    case kBFloat16: return binarize_impl<WD, kBFloat16>(weight, scores, t, n, out);
    case kFloat16: return binarize_impl<WD, kFloat16>(weight, scores, t, n, out);
    default: throw std::invalid_argument("tamt native binarize_and_mask: scores must be float32, bfloat16 or float16");
  }
}

}  // namespace

void binarize_and_mask(int w_dtype, int s_dtype, const void* weight, const void* scores,
                       const float* threshold, int64_t n, void* out) {
  const float t = *threshold;
  switch (w_dtype) {
    case kFloat32: return binarize_w<kFloat32>(s_dtype, weight, scores, t, n, out);
    case kBFloat16: return binarize_w<kBFloat16>(s_dtype, weight, scores, t, n, out);
    case kFloat16: return binarize_w<kFloat16>(s_dtype, weight, scores, t, n, out);
    default: throw std::invalid_argument("tamt native binarize_and_mask: weight must be float32, bfloat16 or float16");
  }
}

}  // namespace cpu
}  // namespace tamt
