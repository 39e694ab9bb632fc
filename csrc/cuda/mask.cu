// Mask kernels: bit packing/unpacking (element i <-> bit (i & 7) of byte
// i >> 3, pad bits zero) and the fused binarize-and-mask product
// out = weight * (scores > threshold) for callers that need W*M materialised.
// CPU twins: csrc/cpu/mask.cpp.
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "tamt/kernels.h"

namespace tamt {
namespace cuda {
namespace {

constexpr int kThreads = 256;

inline unsigned grid_for(int64_t work) {
  int64_t g = (work + kThreads - 1) / kThreads;
  if (g > 65535ll * 16) g = 65535ll * 16;  // grid-stride loops cover the rest
  return static_cast<unsigned>(g < 1 ? 1 : g);
}

// one packed byte per thread; 8-byte loads when the mask pointer is aligned
__global__ void pack_kernel(const uint8_t* __restrict__ mask, int64_t n, uint8_t* __restrict__ packed, bool aligned8) {
  const int64_t nbytes = (n + 7) >> 3;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < nbytes; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i0 = j << 3;
    uint32_t v;
    if (i0 + 8 <= n && aligned8) {
      v = pack8(*reinterpret_cast<const uint64_t*>(mask + i0) & 0x0101010101010101ull);
    } else {
      v = 0;
      for (int b = 0; b < 8 && i0 + b < n; ++b) v |= static_cast<uint32_t>(mask[i0 + b] != 0) << b;
    }
    packed[j] = static_cast<uint8_t>(v);
  }
}

__global__ void unpack_kernel(const uint8_t* __restrict__ packed, int64_t n, uint8_t* __restrict__ mask, bool aligned8) {
  const int64_t nbytes = (n + 7) >> 3;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < nbytes; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i0 = j << 3;
    const uint32_t v = packed[j];
    if (i0 + 8 <= n && aligned8) {
      *reinterpret_cast<uint64_t*>(mask + i0) = unpack8(v);
    } else {
      for (int b = 0; b < 8 && i0 + b < n; ++b) mask[i0 + b] = (v >> b) & 1u;
    }
  }
}

template <int SD>
__device__ __forceinline__ float load_score(const void* s, int64_t i);
template <>
__device__ __forceinline__ float load_score<kFloat32>(const void* s, int64_t i) { return static_cast<const float*>(s)[i]; }
template <>
__device__ __forceinline__ float load_score<kBFloat16>(const void* s, int64_t i) {
  return bf16_bits_to_float(static_cast<const uint16_t*>(s)[i]);
}
template <>
__device__ __forceinline__ float load_score<kFloat16>(const void* s, int64_t i) {
  return f16_bits_to_float(static_cast<const uint16_t*>(s)[i]);
}

template <int WD, int SD>
__global__ void binarize_kernel(const void* __restrict__ weight, const void* __restrict__ scores,
                                const float* __restrict__ threshold, int64_t n, void* __restrict__ out) {
  const float t = *threshold;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const bool keep = load_score<SD>(scores, i) > t;
    if (WD == kFloat32) {
      static_cast<float*>(out)[i] = static_cast<const float*>(weight)[i] * (keep ? 1.0f : 0.0f);
    } else {
      const uint16_t w = static_cast<const uint16_t*>(weight)[i];
      static_cast<uint16_t*>(out)[i] = keep ? w : (WD == kBFloat16 ? bf16_times_zero(w) : f16_times_zero(w));
    }
  }
}

template <int WD>
int binarize_w(int s_dtype, const void* w, const void* s, const float* t, int64_t n, void* out, cudaStream_t st) {
  const unsigned g = grid_for(n);
  switch (s_dtype) {
    case kFloat32: binarize_kernel<WD, kFloat32><<<g, kThreads, 0, st>>>(w, s, t, n, out); break;
    case kBFloat16: binarize_kernel<WD, kBFloat16><<<g, kThreads, 0, st>>>(w, s, t, n, out); break;
    case kFloat16: binarize_kernel<WD, kFloat16><<<g, kThreads, 0, st>>>(w, s, t, n, out); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

int pack_mask(const uint8_t* mask, int64_t n, uint8_t* packed, uintptr_t stream) {
  if (n == 0) return cudaSuccess;
  const bool aligned = (reinterpret_cast<uintptr_t>(mask) & 7u) == 0;
  pack_kernel<<<grid_for((n + 7) >> 3), kThreads, 0, as_stream(stream)>>>(mask, n, packed, aligned);
  return cudaGetLastError();
}

int unpack_mask(const uint8_t* packed, int64_t n, uint8_t* mask, uintptr_t stream) {
  if (n == 0) return cudaSuccess;
  const bool aligned = (reinterpret_cast<uintptr_t>(mask) & 7u) == 0;
  unpack_kernel<<<grid_for((n + 7) >> 3), kThreads, 0, as_stream(stream)>>>(packed, n, mask, aligned);
  return cudaGetLastError();
}

int binarize_and_mask(int w_dtype, int s_dtype, const void* weight, const void* scores, const float* threshold,
                      int64_t n, void* out, uintptr_t stream) {
  if (n == 0) return cudaSuccess;
  cudaStream_t st = as_stream(stream);
  switch (w_dtype) {
    case kFloat32: return binarize_w<kFloat32>(s_dtype, weight, scores, threshold, n, out, st);
    case kBFloat16: return binarize_w<kBFloat16>(s_dtype, weight, scores, threshold, n, out, st);
    case kFloat16: return binarize_w<kFloat16>(s_dtype, weight, scores, threshold, n, out, st);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace cuda
}  // namespace tamt
