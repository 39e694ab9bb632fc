// Host entry points of the native kernels. Pointers are raw addresses (what
// torch's Tensor.data_ptr() returns); sizes are element counts. No torch and
// no CUDA headers here: bindings.cpp includes this file with a plain C++
// compiler, and the CUDA launchers take their stream as an integer handle.
//
// Semantics (the contract of tamt.ops, see tamt/_native.py):
//   threshold of a segment = k-th smallest value (1-indexed, torch.kthvalue),
//   k == 0 -> -inf;  mask = scores > threshold;
//   packed mask: element i is bit (i & 7) of byte (i >> 3), pad bits zero.
#pragma once

#include <cmath>
#include <cstdint>

#include "tamt/common.h"

namespace tamt {

struct AdamWScalars {
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  int64_t step;  // 1 on the first step (torch.optim.AdamW's state["step"] after increment)
};

// The fp32 coefficients torch.optim.AdamW derives from the Python doubles.
inline AdamWCoeffs make_adamw_coeffs(const AdamWScalars& h) {
  AdamWCoeffs c;
  double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(h.step));
  double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(h.step));
  c.decay = static_cast<float>(1.0 - h.lr * h.weight_decay);
  c.lerp_weight = static_cast<float>(1.0 - h.beta1);
  c.beta2 = static_cast<float>(h.beta2);
  c.one_minus_beta2 = static_cast<float>(1.0 - h.beta2);
  c.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  c.eps = static_cast<float>(h.eps);
  c.neg_step_size = static_cast<float>(-(h.lr / bc1));
  return c;
}

namespace cpu {

// Thresholds of nseg segments. ptrs/sizes/ks have nseg entries; out has nseg
// values of the input dtype (kFloat32 or kFloat64). first_hist, if non-null,
// holds the nseg x 2^first_bits histogram of the top key digit of every
// segment (as built by adamw_scores_step), which saves the first pass.
// count_le, if non-null, receives per segment the number of entries whose key
// is <= the threshold's key (= entries <= tau, except that -0.0 and +0.0 are
// distinct keys), found for free by the select; -1 where k == 0 (not searched).
void segmented_kth_smallest(int dtype, int64_t nseg, const int64_t* ptrs, const int64_t* sizes,
                            const int64_t* ks, void* out, const int64_t* first_hist,
                            int first_bits, int64_t* count_le = nullptr);

void pack_mask(const uint8_t* mask, int64_t n, uint8_t* packed);
void unpack_mask(const uint8_t* packed, int64_t n, uint8_t* mask);

// out = weight * (scores > *threshold); weight/out share w_dtype, scores use
// s_dtype (kFloat32, kBFloat16 or kFloat16), threshold is one fp32 value.
void binarize_and_mask(int w_dtype, int s_dtype, const void* weight, const void* scores,
                       const float* threshold, int64_t n, void* out);

// One AdamW step (torch.optim.AdamW semantics, fp32) over nseg segments,
// updating scores/exp_avg/exp_avg_sq in place, and writes into hist (nseg x
// 2^hist_bits, overwritten) the histogram of the top hist_bits of the
// order-preserving key of the updated scores.
void adamw_scores_step(int64_t nseg, const int64_t* scores, const int64_t* grads,
                       const int64_t* exp_avg, const int64_t* exp_avg_sq, const int64_t* sizes,
                       const AdamWScalars& hp, int64_t* hist, int hist_bits);

// y = x * keep / (1 - p), keep_i = (Philox4x32-10 word of element i >= p * 2^32),
// a pure function of (seed, i): calling it on dy with the same seed is the
// backward pass (csrc/cpu/dropout.cpp). x and y may alias.
void philox_dropout(const float* x, float* y, int64_t n, double p, uint64_t seed, bool force_scalar = false);

int num_threads();

}  // namespace cpu

namespace cuda {

// All device pointers; `stream` is a cudaStream_t as an integer. Every
// function returns a cudaError_t code (0 = success); error_string() names it.
//
// Segmented select. meta (device, int64) = [ptrs | sizes | ks | block_start]
// with nseg, nseg, nseg and nseg + 1 entries; block_start is the exclusive
// prefix sum of ceil(size / chunk_elems()) over segments, total_blocks its
// last entry. workspace: workspace_bytes(nseg) bytes of device memory
// (any contents). out: nseg values of the input dtype.
int64_t chunk_elems();
int64_t workspace_bytes(int64_t nseg);
int segmented_kth_smallest(int dtype, int64_t nseg, const int64_t* meta, int64_t total_blocks,
                           void* out, const int64_t* first_hist, int first_bits, void* workspace,
                           uintptr_t stream);

int pack_mask(const uint8_t* mask, int64_t n, uint8_t* packed, uintptr_t stream);
int unpack_mask(const uint8_t* packed, int64_t n, uint8_t* mask, uintptr_t stream);
int binarize_and_mask(int w_dtype, int s_dtype, const void* weight, const void* scores,
                      const float* threshold, int64_t n, void* out, uintptr_t stream);

// meta (device, int64) = [scores | grads | exp_avg | exp_avg_sq | sizes | block_start]
// (5 x nseg + nseg + 1 entries; block_start counts ceil(size / adamw_chunk_elems())). hist: nseg x 2^hist_bits int64, zeroed by the
// caller; the kernel adds its counts into it.
int64_t adamw_chunk_elems();
int adamw_scores_step(int64_t nseg, const int64_t* meta, int64_t total_blocks,
                      const AdamWScalars& hp, int64_t* hist, int hist_bits, uintptr_t stream);

const char* error_string(int code);
int device_count();
// Why device_count() may be 0: the cudaGetDeviceCount error (0 = none) and the runtime this module
// links vs the driver's CUDA version (1000 * major + 10 * minor; a runtime newer than the driver
// fails with cudaErrorInsufficientDriver).  out = {count, error, runtime_version, driver_version}.
void device_query(int out[4]);

}  // namespace cuda
}  // namespace tamt
