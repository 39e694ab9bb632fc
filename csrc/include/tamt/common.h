// Torch-free definitions shared by the C++ (csrc/cpu) and CUDA (csrc/cuda)
// kernels: dtype codes, the order-preserving radix keys and the digit schedule
// of the radix select. Everything here is plain C++ so that g++ and nvcc both
// compile it without torch headers.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define TAMT_HD __host__ __device__ __forceinline__
#else
#define TAMT_HD inline
#endif

namespace tamt {

// dtype codes used across the Python boundary (tamt/_native.py mirrors them).
enum DType : int {
  kFloat32 = 0,
  kFloat64 = 1,
  kBFloat16 = 2,
  kFloat16 = 3,
};

// Widest digit of any pass after the first; the first digit (the histogram the
// fused optimizer step builds) may be between kMinFirstBits and kMaxFirstBits.
constexpr int kRestDigitBits = 11;
constexpr int kMinFirstBits = 4;
constexpr int kMaxFirstBits = 12;
constexpr int kMaxBins = 1 << kMaxFirstBits;  // >= 1 << kRestDigitBits
constexpr int kMaxPasses = 8;                  // 64-bit keys, first digit >= 4

// ---------------------------------------------------------------------------
// Order-preserving keys: key(a) < key(b) <=> a < b for non-NaN a, b (with
// -0.0 < +0.0, which only reorders values that compare equal). Every NaN maps
// to the largest key, matching torch.sort/kthvalue, which put NaN last.
// ---------------------------------------------------------------------------
TAMT_HD uint32_t f32_bits_to_key(uint32_t bits) {
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0xffffffffu;  // NaN
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}
TAMT_HD uint32_t key_to_f32_bits(uint32_t key) {
  return (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
}
TAMT_HD uint64_t f64_bits_to_key(uint64_t bits) {
  if ((bits & 0x7fffffffffffffffull) > 0x7ff0000000000000ull) return ~0ull;  // NaN
  return (bits & 0x8000000000000000ull) ? ~bits : (bits | 0x8000000000000000ull);
}
TAMT_HD uint64_t key_to_f64_bits(uint64_t key) {
  return (key & 0x8000000000000000ull) ? (key & 0x7fffffffffffffffull) : ~key;
}

// ---------------------------------------------------------------------------
// Digit schedule of the radix select, most significant digit first: the first
// digit has `first_bits` bits, the remaining key bits are split as evenly as
// possible into digits of at most kRestDigitBits bits. Pass p looks at
// bits [shift[p], shift[p] + width[p]) of the key. fp32 with first_bits = 11:
// widths 11, 11, 10 (three passes); fp64: 11, 11, 11, 11, 10, 10.
// ---------------------------------------------------------------------------
struct DigitSchedule {
  int npass;
  int shift[kMaxPasses];
  int width[kMaxPasses];
};

TAMT_HD DigitSchedule make_schedule(int key_bits, int first_bits) {
  DigitSchedule s{};
  int remaining = key_bits - first_bits;
  s.npass = 1;
  s.width[0] = first_bits;
  s.shift[0] = remaining;
  int nrest = (remaining + kRestDigitBits - 1) / kRestDigitBits;
  for (int i = 0; i < nrest; ++i) {
    int left = nrest - i;
    int w = (remaining + left - 1) / left;
    remaining -= w;
    s.width[s.npass] = w;
    s.shift[s.npass] = remaining;
    ++s.npass;
  }
  return s;
}

// True when `key` agrees with `prefix` on every digit above pass p's digit.
template <typename KeyT>
TAMT_HD bool matches_prefix(KeyT key, KeyT prefix, int shift, int width, int pass) {
  if (pass == 0) return true;
  int hi = shift + width;  // < 8 * sizeof(KeyT) for every pass after the first
  return (key >> hi) == (prefix >> hi);
}

template <typename KeyT>
TAMT_HD uint32_t digit_of(KeyT key, int shift, int width) {
  return static_cast<uint32_t>((key >> shift) & ((KeyT(1) << width) - 1));
}

// ---------------------------------------------------------------------------
// AdamW in the arithmetic of torch.optim.AdamW (foreach and for-loop paths):
// the Python-double hyper-parameters become fp32 scalars, then per element
//   p *= 1 - lr*wd;  m = lerp(m, g, 1 - beta1);  v = v*beta2 + (1-beta2)*g*g
//   p += -(lr / (1 - beta1^t)) * (m / (sqrt(v) / sqrt(1 - beta2^t) + eps))
// ---------------------------------------------------------------------------
struct AdamWCoeffs {
  float decay;          // 1 - lr * weight_decay
  float lerp_weight;    // 1 - beta1
  float beta2;
  float one_minus_beta2;
  float bc2_sqrt;       // sqrt(1 - beta2^t)
  float eps;
  float neg_step_size;  // -lr / (1 - beta1^t)
};

TAMT_HD void adamw_update(const AdamWCoeffs& c, float g, float& p, float& m, float& v) {
  p = p * c.decay;
  float w = c.lerp_weight;
  // torch's lerp as its vectorized CPU kernel and its (contracted) CUDA
  // kernel compute it: one fused multiply-add
  m = (w < 0.5f && w > -0.5f) ? fmaf(w, g - m, m) : fmaf(w - 1.0f, g - m, g);
  v = v * c.beta2;
  v = v + c.one_minus_beta2 * g * g;
  float denom = sqrtf(v) / c.bc2_sqrt + c.eps;
  p = p + c.neg_step_size * (m / denom);
}

}  // namespace tamt

namespace tamt {

// ---------------------------------------------------------------------------
// 16-bit floats as raw bits (no cuda_fp16/bf16 headers needed on the host).
// ---------------------------------------------------------------------------
TAMT_HD float bits_to_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  union { uint32_t u; float f; } c;
  c.u = b;
  return c.f;
#endif
}

TAMT_HD float bf16_bits_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

TAMT_HD float f16_bits_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1fu) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);  // normal: rebias 15 -> 127
  } else if (man == 0) {
    bits = sign;  // +-0
  } else {
    // subnormal half: man * 2^-24, exact in fp32
    int e = -1;
    do {
      ++e;
      man <<= 1;
    } while ((man & 0x400u) == 0);
    bits = sign | ((112u - static_cast<uint32_t>(e)) << 23) | ((man & 0x3ffu) << 13);
  }
  return bits_to_float(bits);
}

// weight * 0 for a 16-bit float given as bits: a zero of the weight's sign,
// or NaN for inf/NaN weights (IEEE: inf * 0 = NaN).
TAMT_HD uint16_t bf16_times_zero(uint16_t w) {
  return ((w & 0x7f80u) == 0x7f80u) ? static_cast<uint16_t>(0x7fc0u) : static_cast<uint16_t>(w & 0x8000u);
}
TAMT_HD uint16_t f16_times_zero(uint16_t w) {
  return ((w & 0x7c00u) == 0x7c00u) ? static_cast<uint16_t>(0x7e00u) : static_cast<uint16_t>(w & 0x8000u);
}

// 8 bytes holding 0/1 (element i in byte i, little endian) -> 8 bits (element i in bit i).
TAMT_HD uint32_t pack8(uint64_t x) { return static_cast<uint32_t>((x * 0x0102040810204080ull) >> 56); }
// the inverse: bit i of v -> byte i (0 or 1)
TAMT_HD uint64_t unpack8(uint32_t v) {
  return (((v & 0x7fu) * 0x0000040810204081ull) & 0x0101010101010101ull) |
         (static_cast<uint64_t>((v >> 7) & 1u) << 56);
}

}  // namespace tamt
