// Segmented multi-block radix select: the k-th smallest value (torch.kthvalue
// semantics, k 1-indexed, k == 0 -> -inf) of every segment -- the thresholds of
// all masked matrices of a model in one launch sequence.
//
// Per pass p of the digit schedule (tamt/common.h):
//   hist_kernel  : every block takes one chunk of one segment, counts digit p
//                  of the keys that agree with the segment's prefix on the
//                  digits above p in shared memory, then adds its non-zero
//                  bins to the segment's global histogram;
//   select_kernel: one block per segment scans the histogram, finds the bin
//                  holding rank krem, appends it to the prefix, subtracts the
//                  counts below from krem and clears the histogram.
// After the last pass the prefix is the key of the k-th smallest value. With a
// first-digit histogram from the fused optimizer step, pass 0's hist_kernel
// is skipped. CPU twin: csrc/cpu/select.cpp.
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "tamt/kernels.h"

namespace tamt {
namespace cuda {
namespace {

constexpr int kHistThreads = 512;
constexpr int64_t kChunk = int64_t(kHistThreads) * 256;  // elements per block
constexpr int kSelectThreads = 256;

template <typename T>
struct Keys;
template <>
struct Keys<float> {
  using Key = uint32_t;
  __device__ static Key key(float v) { return f32_bits_to_key(__float_as_uint(v)); }
  __device__ static float value(Key k) { return __uint_as_float(key_to_f32_bits(k)); }
  __device__ static float neg_inf() { return -__int_as_float(0x7f800000); }
};
template <>
struct Keys<double> {
  using Key = uint64_t;
  __device__ static Key key(double v) {
    return f64_bits_to_key(static_cast<uint64_t>(__double_as_longlong(v)));
  }
  __device__ static double value(Key k) { return __longlong_as_double(static_cast<long long>(key_to_f64_bits(k))); }
  __device__ static double neg_inf() { return -__longlong_as_double(0x7ff0000000000000ll); }
};

struct SegState {
  unsigned long long prefix;
  long long krem;
};

template <typename T>
__global__ void init_kernel(const int64_t* meta, int64_t nseg, SegState* state, T* out) {
  const int64_t* ks = meta + 2 * nseg;
  for (int64_t s = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; s < nseg; s += int64_t(gridDim.x) * blockDim.x) {
    state[s].prefix = 0;
    state[s].krem = ks[s];
    if (ks[s] == 0) out[s] = Keys<T>::neg_inf();
  }
}

template <typename T>
__global__ void __launch_bounds__(kHistThreads)
hist_kernel(const int64_t* meta, int64_t nseg, const SegState* state, int shift, int width, int pass,
            unsigned long long* hist) {
  using Key = typename Keys<T>::Key;
  __shared__ uint32_t sh[kMaxBins];
  __shared__ int64_t seg_sh;
  const int64_t* ptrs = meta;
  const int64_t* sizes = meta + nseg;
  const int64_t* block_start = meta + 3 * nseg;
  if (threadIdx.x == 0) seg_sh = find_segment(block_start, nseg, blockIdx.x);
  const int nb = 1 << width;
  for (int b = threadIdx.x; b < nb; b += blockDim.x) sh[b] = 0;
  __syncthreads();
  const int64_t seg = seg_sh;
  if (state[seg].krem == 0) return;  // k == 0: threshold is -inf, nothing to count (uniform per block)
  const Key prefix = static_cast<Key>(state[seg].prefix);
  const T* x = reinterpret_cast<const T*>(ptrs[seg]);
  const int64_t begin = (blockIdx.x - block_start[seg]) * kChunk;
  int64_t end = begin + kChunk;
  if (end > sizes[seg]) end = sizes[seg];
  // The loop bound is block-uniform so every lane of a warp runs the same
  // number of iterations (warp_hist_add uses warp-wide votes); kItems loads
  // are issued before any of them is counted.
  constexpr int kItems = 4;
  for (int64_t base = begin; base < end; base += int64_t(kItems) * blockDim.x) {
    T v[kItems];
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int64_t i = base + j * int64_t(blockDim.x) + threadIdx.x;
      v[j] = i < end ? x[i] : T(0);
    }
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int64_t i = base + j * int64_t(blockDim.x) + threadIdx.x;
      const Key key = Keys<T>::key(v[j]);
      const bool valid = i < end && matches_prefix<Key>(key, prefix, shift, width, pass);
      warp_hist_add(sh, digit_of<Key>(key, shift, width), valid);
    }
  }
  __syncthreads();
  unsigned long long* gh = hist + seg * int64_t(kMaxBins);
  for (int b = threadIdx.x; b < nb; b += blockDim.x)
    if (sh[b] != 0) atomicAdd(gh + b, static_cast<unsigned long long>(sh[b]));
}

// One block per segment: find the bin of rank krem in the histogram of pass
// `pass`, extend the prefix; clear the histogram (when it is the workspace's)
// for the next pass; write the threshold after the last pass.
template <typename T>
__global__ void __launch_bounds__(kSelectThreads)
select_kernel(int64_t nseg, SegState* state, const unsigned long long* hist, int64_t hist_stride,
              unsigned long long* clear, int shift, int width, bool last, T* out) {
  using Key = typename Keys<T>::Key;
  __shared__ long long warp_tot[kSelectThreads / 32];
  const int64_t seg = blockIdx.x;
  const long long krem = state[seg].krem;
  if (krem == 0) return;
  const int nb = 1 << width;
  const int per = (nb + kSelectThreads - 1) / kSelectThreads;  // bins per thread
  const unsigned long long* h = hist + seg * hist_stride;
  const int b0 = threadIdx.x * per;
  long long mine = 0;
  for (int j = 0; j < per; ++j)
    if (b0 + j < nb) mine += static_cast<long long>(h[b0 + j]);
  // inclusive block scan of the per-thread sums
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  long long incl = mine;
  for (int o = 1; o < 32; o <<= 1) {
    long long y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  if (lane == 31) warp_tot[warp] = incl;
  __syncthreads();
  long long warp_off = 0;
  for (int w = 0; w < warp; ++w) warp_off += warp_tot[w];
  incl += warp_off;
  const long long excl = incl - mine;
  if (excl < krem && krem <= incl) {  // exactly one thread
    long long cum = excl;
    int bin = b0;
    for (int j = 0; j < per; ++j) {
      long long c = static_cast<long long>(h[b0 + j]);
      if (cum + c >= krem) {
        bin = b0 + j;
        break;
      }
      cum += c;
    }
    const Key prefix = static_cast<Key>(state[seg].prefix) | (static_cast<Key>(bin) << shift);
    state[seg].prefix = prefix;
    state[seg].krem = krem - cum;
    if (last) out[seg] = Keys<T>::value(prefix);
  }
  if (clear != nullptr) {
    __syncthreads();  // every thread has read h before it is cleared
    for (int b = threadIdx.x; b < nb; b += blockDim.x) clear[seg * int64_t(kMaxBins) + b] = 0;
  }
}

template <typename T>
int run_select(int64_t nseg, const int64_t* meta, int64_t total_blocks, void* out_v,
               const int64_t* first_hist, int first_bits, void* workspace, cudaStream_t stream) {
  using Key = typename Keys<T>::Key;
  T* out = static_cast<T*>(out_v);
  SegState* state = static_cast<SegState*>(workspace);
  unsigned long long* hist = reinterpret_cast<unsigned long long*>(state + nseg);
  const DigitSchedule sched = make_schedule(8 * sizeof(Key), first_bits);
  cudaError_t err = cudaMemsetAsync(hist, 0, sizeof(unsigned long long) * kMaxBins * nseg, stream);
  if (err != cudaSuccess) return err;
  init_kernel<T><<<static_cast<unsigned>((nseg + 255) / 256), 256, 0, stream>>>(meta, nseg, state, out);
  for (int p = 0; p < sched.npass; ++p) {
    const bool last = p == sched.npass - 1;
    if (p == 0 && first_hist != nullptr) {
      select_kernel<T><<<static_cast<unsigned>(nseg), kSelectThreads, 0, stream>>>(
          nseg, state, reinterpret_cast<const unsigned long long*>(first_hist), int64_t(1) << first_bits,
          nullptr, sched.shift[p], sched.width[p], last, out);
    } else {
      if (total_blocks > 0)
        hist_kernel<T><<<static_cast<unsigned>(total_blocks), kHistThreads, 0, stream>>>(
            meta, nseg, state, sched.shift[p], sched.width[p], p, hist);
      select_kernel<T><<<static_cast<unsigned>(nseg), kSelectThreads, 0, stream>>>(
          nseg, state, hist, kMaxBins, hist, sched.shift[p], sched.width[p], last, out);
    }
  }
  return cudaGetLastError();
}

}  // namespace

int64_t chunk_elems() { return kChunk; }

int64_t workspace_bytes(int64_t nseg) {
  return nseg * int64_t(sizeof(SegState)) + nseg * int64_t(kMaxBins) * int64_t(sizeof(unsigned long long));
}

int segmented_kth_smallest(int dtype, int64_t nseg, const int64_t* meta, int64_t total_blocks, void* out,
                           const int64_t* first_hist, int first_bits, void* workspace, uintptr_t stream) {
  if (nseg == 0) return cudaSuccess;
  if (first_bits < kMinFirstBits || first_bits > kMaxFirstBits) return cudaErrorInvalidValue;
  if (total_blocks > 0x7fffffffll) return cudaErrorInvalidValue;
  if (dtype == kFloat32)
    return run_select<float>(nseg, meta, total_blocks, out, first_hist, first_bits, workspace, as_stream(stream));
  if (dtype == kFloat64)
    return run_select<double>(nseg, meta, total_blocks, out, first_hist, first_bits, workspace, as_stream(stream));
  return cudaErrorInvalidValue;
}

const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

void device_query(int out[4]) {
  int n = 0, runtime = 0, driver = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    n = 0;
  }
  cudaRuntimeGetVersion(&runtime);
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;  // 0: no driver at all
  out[0] = n;
  out[1] = static_cast<int>(err);
  out[2] = runtime;
  out[3] = driver;
}

}  // namespace cuda
}  // namespace tamt
