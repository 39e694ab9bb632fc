// Segmented radix select on the CPU: the k-th smallest value of every segment
// (torch.kthvalue semantics) with the digit schedule, prefix filter and rank
// update of csrc/cuda/select.cu, so that the CUDA algorithm's logic is
// executed by every CPU test run.
//
// Pass 0 histograms the top digit of every segment (or takes the histogram
// the fused optimizer step built). Pass 1 scans the segment again, counts the
// next digit of the keys that share the selected top digit and, unlike the GPU
// kernel, also copies those keys out, so passes 2.. only touch the candidates.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tamt/common.h"
#include "tamt/kernels.h"

namespace tamt {
namespace cpu {
namespace {

constexpr int64_t kChunk = 1 << 15;
// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 17;

template <typename T>
struct KeyTraits;
template <>
struct KeyTraits<float> {
  using Key = uint32_t;
  static Key key(float v) {
    uint32_t b;
    std::memcpy(&b, &v, 4);
    return f32_bits_to_key(b);
  }
  static float value(Key k) {
    uint32_t b = key_to_f32_bits(k);
    float v;
    std::memcpy(&v, &b, 4);
    return v;
  }
};
template <>
struct KeyTraits<double> {
  using Key = uint64_t;
  static Key key(double v) {
    uint64_t b;
    std::memcpy(&b, &v, 8);
    return f64_bits_to_key(b);
  }
  static double value(Key k) {
    uint64_t b = key_to_f64_bits(k);
    double v;
    std::memcpy(&v, &b, 8);
    return v;
  }
};

struct WorkItem {
  int64_t seg, begin, end;
};

// Select the bin holding rank `krem` (1-indexed) of a histogram; returns the
// bin and replaces krem by the rank inside that bin.
template <typename CountT>
uint32_t select_bin(const CountT* hist, int nbins, int64_t& krem, int64_t* bin_count) {
  int64_t cum = 0;
  for (int b = 0; b < nbins; ++b) {
    int64_t c = static_cast<int64_t>(hist[b]);
    if (cum + c >= krem) {
      krem -= cum;
      *bin_count = c;
      return static_cast<uint32_t>(b);
    }
    cum += c;
  }
  throw std::runtime_error("tamt native select: histogram holds fewer than k elements "
                           "(inconsistent first-digit histogram?)");
}

template <typename T>
void select_impl(int64_t nseg, const int64_t* ptrs, const int64_t* sizes, const int64_t* ks,
                 T* out, const int64_t* first_hist, int first_bits, int64_t* count_le) {
  using Traits = KeyTraits<T>;
  using Key = typename Traits::Key;
  constexpr int kKeyBits = 8 * sizeof(Key);
  const DigitSchedule sched = make_schedule(kKeyBits, first_bits);

  std::vector<Key> prefix(nseg, 0);
  std::vector<int64_t> krem(nseg, 0);
  std::vector<int64_t> active;  // segments with k >= 1
  for (int64_t s = 0; s < nseg; ++s) {
    if (ks[s] < 0 || ks[s] > sizes[s])
      throw std::invalid_argument("tamt native select: k out of range [0, n] for segment " +
                                  std::to_string(s));
    if (count_le != nullptr) count_le[s] = -1;
    if (ks[s] == 0) {
      out[s] = -std::numeric_limits<T>::infinity();
    } else {
      krem[s] = ks[s];
      active.push_back(s);
    }
  }
  if (active.empty()) return;
  const int64_t nact = static_cast<int64_t>(active.size());

  std::vector<WorkItem> items;
  for (int64_t a = 0; a < nact; ++a) {
    int64_t s = active[a];
    for (int64_t b = 0; b < sizes[s]; b += kChunk) items.push_back({a, b, std::min(sizes[s], b + kChunk)});
  }
  const int64_t nitems = static_cast<int64_t>(items.size());
  int64_t total = 0;
  for (int64_t a = 0; a < nact; ++a) total += sizes[active[a]];
  const bool par = total >= kParallelMin;

  // ---- pass 0: histogram of the top digit --------------------------------
  const int nb0 = 1 << sched.width[0];
  std::vector<int64_t> hist0(static_cast<size_t>(nact) * nb0, 0);
  if (first_hist != nullptr) {
    for (int64_t a = 0; a < nact; ++a)
      std::memcpy(&hist0[a * nb0], first_hist + active[a] * nb0, sizeof(int64_t) * nb0);
  } else {
#pragma omp parallel if (par)
    {
      std::vector<uint32_t> local(static_cast<size_t>(nact) * nb0, 0);
#pragma omp for schedule(dynamic, 1) nowait
      for (int64_t it = 0; it < nitems; ++it) {
        const WorkItem w = items[it];
        const T* x = reinterpret_cast<const T*>(ptrs[active[w.seg]]);
        uint32_t* h = &local[w.seg * nb0];
        for (int64_t i = w.begin; i < w.end; ++i) ++h[digit_of<Key>(Traits::key(x[i]), sched.shift[0], sched.width[0])];
      }
#pragma omp critical
      for (size_t j = 0; j < local.size(); ++j) hist0[j] += local[j];
    }
  }
  std::vector<int64_t> count(nact);
  for (int64_t a = 0; a < nact; ++a) {
    uint32_t bin = select_bin(&hist0[a * nb0], nb0, krem[active[a]], &count[a]);
    prefix[active[a]] = static_cast<Key>(bin) << sched.shift[0];
  }

  // ---- pass 1: gather the keys of the selected top digit, histogram digit 1
  const int nb1 = 1 << sched.width[1];
  std::vector<std::vector<Key>> cand(nact);
  std::vector<int64_t> hist1(static_cast<size_t>(nact) * nb1, 0);
  std::unique_ptr<std::atomic<int64_t>[]> fill(new std::atomic<int64_t>[nact]);
  for (int64_t a = 0; a < nact; ++a) {
    cand[a].resize(count[a]);
    fill[a].store(0);
  }
#pragma omp parallel if (par)
  {
    std::vector<uint32_t> local(static_cast<size_t>(nact) * nb1, 0);
    std::vector<Key> buf;
    buf.reserve(kChunk);
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t it = 0; it < nitems; ++it) {
      const WorkItem w = items[it];
      const int64_t s = active[w.seg];
      const T* x = reinterpret_cast<const T*>(ptrs[s]);
      const Key pre = prefix[s];
      uint32_t* h = &local[w.seg * nb1];
      buf.clear();
      for (int64_t i = w.begin; i < w.end; ++i) {
        Key key = Traits::key(x[i]);
        if (matches_prefix<Key>(key, pre, sched.shift[1], sched.width[1], 1)) {
          ++h[digit_of<Key>(key, sched.shift[1], sched.width[1])];
          buf.push_back(key);
        }
      }
      if (!buf.empty()) {
        // No exceptions inside the parallel region: an overflow (a histogram
        // that does not match the scores) leaves fill != count, checked below.
        int64_t at = fill[w.seg].fetch_add(static_cast<int64_t>(buf.size()));
        if (at + static_cast<int64_t>(buf.size()) <= count[w.seg])
          std::memcpy(cand[w.seg].data() + at, buf.data(), buf.size() * sizeof(Key));
      }
    }
#pragma omp critical
    for (size_t j = 0; j < local.size(); ++j) hist1[j] += local[j];
  }

  // ---- passes 2..: on the candidates, segment by segment ------------------
  std::vector<int> failed(nact, 0);
  int64_t ncand = 0;
  for (int64_t a = 0; a < nact; ++a) ncand += count[a];
#pragma omp parallel for schedule(dynamic, 1) if (ncand >= kParallelMin)
  for (int64_t a = 0; a < nact; ++a) {
    const int64_t s = active[a];
    if (fill[a].load() != count[a]) {
      failed[a] = 1;
      continue;
    }
    try {
    int64_t c;
    uint32_t bin = select_bin(&hist1[a * nb1], nb1, krem[s], &c);
    prefix[s] |= static_cast<Key>(bin) << sched.shift[1];
    std::vector<Key>& keys = cand[a];
    std::vector<int64_t> h(kMaxBins);
    for (int p = 2; p < sched.npass; ++p) {
      const int nb = 1 << sched.width[p];
      std::fill(h.begin(), h.begin() + nb, 0);
      size_t kept = 0;
      for (size_t i = 0; i < keys.size(); ++i) {
        Key key = keys[i];
        if (matches_prefix<Key>(key, prefix[s], sched.shift[p], sched.width[p], p)) {
          ++h[digit_of<Key>(key, sched.shift[p], sched.width[p])];
          keys[kept++] = key;
        }
      }
      keys.resize(kept);
      bin = select_bin(h.data(), nb, krem[s], &c);
      prefix[s] |= static_cast<Key>(bin) << sched.shift[p];
    }
    out[s] = Traits::value(prefix[s]);
    // krem is now the rank among the c entries equal to the threshold: k - krem lie below it
    if (count_le != nullptr) count_le[s] = ks[s] - krem[s] + c;
    } catch (...) {
      failed[a] = 1;
    }
  }
  for (int64_t a = 0; a < nact; ++a)
    if (failed[a]) throw std::runtime_error("tamt native select: first-digit histogram does not match the scores");
}

}  // namespace

void segmented_kth_smallest(int dtype, int64_t nseg, const int64_t* ptrs, const int64_t* sizes,
                            const int64_t* ks, void* out, const int64_t* first_hist,
                            int first_bits, int64_t* count_le) {
  if (first_bits < kMinFirstBits || first_bits > kMaxFirstBits)
    throw std::invalid_argument("tamt native select: hist_bits must be in [4, 12]");
  if (dtype == kFloat32)
    select_impl<float>(nseg, ptrs, sizes, ks, static_cast<float*>(out), first_hist, first_bits, count_le);
  else if (dtype == kFloat64)
    select_impl<double>(nseg, ptrs, sizes, ks, static_cast<double*>(out), first_hist, first_bits, count_le);
  else
    throw std::invalid_argument("tamt native select: scores must be float32 or float64");
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace cpu
}  // namespace tamt
