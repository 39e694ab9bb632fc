// Fused score-optimizer step: the AdamW update of the scores (torch.optim.AdamW
// arithmetic in fp32, tamt::adamw_update) that, in the same pass over S,
// builds the histogram of the top digit of the updated scores' order-
// preserving keys -- the first pass of the next step's threshold search
// (select.cu takes it as `first_hist`). Each block updates one chunk of one
// segment and adds its shared-memory histogram into the segment's row of
// `hist` (nseg x 2^hist_bits int64, zeroed by the caller).
// CPU twin: csrc/cpu/adamw.cpp.
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "tamt/kernels.h"

namespace tamt {
namespace cuda {
namespace {

constexpr int kThreads = 512;
constexpr int64_t kChunk = int64_t(kThreads) * 64;

__global__ void __launch_bounds__(kThreads)
adamw_hist_kernel(const int64_t* meta, int64_t nseg, AdamWCoeffs c, unsigned long long* hist, int hist_bits) {
  __shared__ uint32_t sh[kMaxBins];
  __shared__ int64_t seg_sh;
  const int64_t* block_start = meta + 5 * nseg;
  if (threadIdx.x == 0) seg_sh = find_segment(block_start, nseg, blockIdx.x);
  const int nb = 1 << hist_bits;
  for (int b = threadIdx.x; b < nb; b += blockDim.x) sh[b] = 0;
  __syncthreads();
  const int64_t seg = seg_sh;
  float* p = reinterpret_cast<float*>(meta[seg]);
  const float* g = reinterpret_cast<const float*>(meta[nseg + seg]);
  float* m = reinterpret_cast<float*>(meta[2 * nseg + seg]);
  float* v = reinterpret_cast<float*>(meta[3 * nseg + seg]);
  const int64_t n = meta[4 * nseg + seg];
  const int64_t begin = (blockIdx.x - block_start[seg]) * kChunk;
  int64_t end = begin + kChunk;
  if (end > n) end = n;
  const int shift = 32 - hist_bits;
  constexpr int kItems = 4;
  for (int64_t base = begin; base < end; base += int64_t(kItems) * blockDim.x) {
    float pv[kItems], gv[kItems], mv[kItems], vv[kItems];
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int64_t i = base + j * int64_t(blockDim.x) + threadIdx.x;
      if (i < end) {
        pv[j] = p[i];
        gv[j] = g[i];
        mv[j] = m[i];
        vv[j] = v[i];
      }
    }
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int64_t i = base + j * int64_t(blockDim.x) + threadIdx.x;
      const bool valid = i < end;
      uint32_t bin = 0;
      if (valid) {
        adamw_update(c, gv[j], pv[j], mv[j], vv[j]);
        p[i] = pv[j];
        m[i] = mv[j];
        v[i] = vv[j];
        bin = f32_bits_to_key(__float_as_uint(pv[j])) >> shift;
      }
      warp_hist_add(sh, bin, valid);
    }
  }
  __syncthreads();
  unsigned long long* gh = hist + seg * int64_t(nb);
  for (int b = threadIdx.x; b < nb; b += blockDim.x)
    if (sh[b] != 0) atomicAdd(gh + b, static_cast<unsigned long long>(sh[b]));
}

}  // namespace

int adamw_scores_step(int64_t nseg, const int64_t* meta, int64_t total_blocks, const AdamWScalars& hp,
                      int64_t* hist, int hist_bits, uintptr_t stream) {
  if (hist_bits < kMinFirstBits || hist_bits > kMaxFirstBits) return cudaErrorInvalidValue;
  if (total_blocks > 0x7fffffffll) return cudaErrorInvalidValue;
  if (total_blocks == 0) return cudaSuccess;
  adamw_hist_kernel<<<static_cast<unsigned>(total_blocks), kThreads, 0, as_stream(stream)>>>(
      meta, nseg, make_adamw_coeffs(hp), reinterpret_cast<unsigned long long*>(hist), hist_bits);
  return cudaGetLastError();
}

int64_t adamw_chunk_elems() { return kChunk; }

}  // namespace cuda
}  // namespace tamt
