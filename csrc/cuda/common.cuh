// Helpers shared by the CUDA kernels (torch-free: raw pointers + cudaStream_t).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "tamt/common.h"

namespace tamt {
namespace cuda {

inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// The segment a block works on: largest s with block_start[s] <= b (segments
// without blocks are skipped because their start equals the next one's).
__device__ __forceinline__ int64_t find_segment(const int64_t* block_start, int64_t nseg, int64_t b) {
  int64_t lo = 0, hi = nseg - 1;
  while (lo < hi) {
    int64_t mid = (lo + hi + 1) >> 1;
    if (block_start[mid] <= b) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Shared-memory histogram increment that collapses the common "whole warp
// hits one bin" case (heavily tied scores, e.g. the OMP initialisation where
// half of S is exactly 0) into one atomic.
__device__ __forceinline__ void warp_hist_add(uint32_t* sh, uint32_t bin, bool valid) {
  const unsigned active = __activemask();
  const unsigned want = __ballot_sync(active, valid);
  if (want == 0) return;
  const int leader = __ffs(want) - 1;
  const uint32_t lead_bin = __shfl_sync(active, bin, leader);
  const bool same = valid && bin == lead_bin;
  const unsigned same_mask = __ballot_sync(active, same);
  if (same_mask == want) {
    if ((threadIdx.x & 31) == static_cast<unsigned>(leader)) atomicAdd(sh + bin, static_cast<uint32_t>(__popc(want)));
  } else if (valid) {
    atomicAdd(sh + bin, 1u);
  }
}

}  // namespace cuda
}  // namespace tamt
