// pybind11 module tamt._C: the native kernels behind raw-pointer interfaces.
// Deliberately torch-free (no libtorch headers: it compiles in seconds and is
// independent of torch's C++ ABI); tamt/_native.py validates tensors, takes
// their data_ptr()s, allocates outputs and registers the torch ops.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "tamt/kernels.h"

namespace py = pybind11;
using tamt::AdamWScalars;

namespace {

template <typename T>
const T* ptr_or_null(int64_t p) {
  return p == 0 ? nullptr : reinterpret_cast<const T*>(p);
}

void check_same_len(const std::vector<int64_t>& a, const std::vector<int64_t>& b, const char* what) {
  if (a.size() != b.size()) throw std::invalid_argument(std::string("tamt._C: length mismatch: ") + what);
}

#ifdef TAMT_WITH_CUDA
void cuda_check(int code, const char* what) {
  if (code != 0)
    throw std::runtime_error(std::string("tamt._C.") + what + ": CUDA error: " + tamt::cuda::error_string(code));
}
#endif

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "tamt native kernels (C++/OpenMP on CPU, CUDA on GPU) behind raw-pointer interfaces";
  m.attr("ABI_VERSION") = 1;
#ifdef TAMT_WITH_CUDA
  m.attr("WITH_CUDA") = true;
#else
  m.attr("WITH_CUDA") = false;
#endif
#ifdef TAMT_CUDA_ARCHS
  m.attr("CUDA_ARCHS") = TAMT_CUDA_ARCHS;
#else
  m.attr("CUDA_ARCHS") = "";
#endif
  m.attr("DTYPE_FLOAT32") = static_cast<int>(tamt::kFloat32);
  m.attr("DTYPE_FLOAT64") = static_cast<int>(tamt::kFloat64);
  m.attr("DTYPE_BFLOAT16") = static_cast<int>(tamt::kBFloat16);
  m.attr("DTYPE_FLOAT16") = static_cast<int>(tamt::kFloat16);
  m.attr("MIN_HIST_BITS") = tamt::kMinFirstBits;
  m.attr("MAX_HIST_BITS") = tamt::kMaxFirstBits;

  // ---------------------------------------------------------------- CPU
  m.def("cpu_num_threads", &tamt::cpu::num_threads);
  m.def(
      "cpu_segmented_kth_smallest",
      [](int dtype, const std::vector<int64_t>& ptrs, const std::vector<int64_t>& sizes,
         const std::vector<int64_t>& ks, int64_t out, int64_t first_hist, int first_bits) {
        check_same_len(ptrs, sizes, "ptrs/sizes");
        check_same_len(ptrs, ks, "ptrs/ks");
        py::gil_scoped_release nogil;
        tamt::cpu::segmented_kth_smallest(dtype, static_cast<int64_t>(ptrs.size()), ptrs.data(), sizes.data(),
                                          ks.data(), reinterpret_cast<void*>(out),
                                          ptr_or_null<int64_t>(first_hist), first_bits);
      },
      py::arg("dtype"), py::arg("ptrs"), py::arg("sizes"), py::arg("ks"), py::arg("out"), py::arg("first_hist"),
      py::arg("first_bits"));
  m.def(
      "cpu_segmented_kth_smallest_count_le",  // the same, plus count_le (int64 per segment; see kernels.h)
      [](int dtype, const std::vector<int64_t>& ptrs, const std::vector<int64_t>& sizes,
         const std::vector<int64_t>& ks, int64_t out, int64_t first_hist, int first_bits, int64_t count_le) {
        check_same_len(ptrs, sizes, "ptrs/sizes");
        check_same_len(ptrs, ks, "ptrs/ks");
        py::gil_scoped_release nogil;
        tamt::cpu::segmented_kth_smallest(dtype, static_cast<int64_t>(ptrs.size()), ptrs.data(), sizes.data(),
                                          ks.data(), reinterpret_cast<void*>(out),
                                          ptr_or_null<int64_t>(first_hist), first_bits,
                                          reinterpret_cast<int64_t*>(count_le));
      });
  m.def(
      "cpu_pack_mask",
      [](int64_t mask, int64_t n, int64_t packed) {
        tamt::cpu::pack_mask(reinterpret_cast<const uint8_t*>(mask), n, reinterpret_cast<uint8_t*>(packed));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "cpu_unpack_mask",
      [](int64_t packed, int64_t n, int64_t mask) {
        tamt::cpu::unpack_mask(reinterpret_cast<const uint8_t*>(packed), n, reinterpret_cast<uint8_t*>(mask));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "cpu_binarize_and_mask",
      [](int w_dtype, int s_dtype, int64_t weight, int64_t scores, int64_t threshold, int64_t n, int64_t out) {
        tamt::cpu::binarize_and_mask(w_dtype, s_dtype, reinterpret_cast<const void*>(weight),
                                     reinterpret_cast<const void*>(scores), reinterpret_cast<const float*>(threshold),
                                     n, reinterpret_cast<void*>(out));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "cpu_philox_dropout",
      [](int64_t x, int64_t y, int64_t n, double p, uint64_t seed, bool force_scalar) {
        tamt::cpu::philox_dropout(reinterpret_cast<const float*>(x), reinterpret_cast<float*>(y), n, p, seed,
                                  force_scalar);
      },
      py::arg("x"), py::arg("y"), py::arg("n"), py::arg("p"), py::arg("seed"), py::arg("force_scalar") = false,
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "cpu_adamw_scores_step",
      [](const std::vector<int64_t>& scores, const std::vector<int64_t>& grads, const std::vector<int64_t>& exp_avg,
         const std::vector<int64_t>& exp_avg_sq, const std::vector<int64_t>& sizes, double lr, double beta1,
         double beta2, double eps, double weight_decay, int64_t step, int64_t hist, int hist_bits) {
        check_same_len(scores, grads, "scores/grads");
        check_same_len(scores, exp_avg, "scores/exp_avg");
        check_same_len(scores, exp_avg_sq, "scores/exp_avg_sq");
        check_same_len(scores, sizes, "scores/sizes");
        AdamWScalars hp{lr, beta1, beta2, eps, weight_decay, step};
        py::gil_scoped_release nogil;
        tamt::cpu::adamw_scores_step(static_cast<int64_t>(scores.size()), scores.data(), grads.data(), exp_avg.data(),
                                     exp_avg_sq.data(), sizes.data(), hp, reinterpret_cast<int64_t*>(hist), hist_bits);
      });

#ifdef TAMT_WITH_CUDA
  // ---------------------------------------------------------------- CUDA
  m.def("cuda_device_count", &tamt::cuda::device_count);
  m.def("cuda_device_query", []() {
    int q[4];
    tamt::cuda::device_query(q);
    return py::make_tuple(q[0], q[1], std::string(tamt::cuda::error_string(q[1])), q[2], q[3]);
  });
  m.def("cuda_chunk_elems", &tamt::cuda::chunk_elems);
  m.def("cuda_adamw_chunk_elems", &tamt::cuda::adamw_chunk_elems);
  m.def("cuda_workspace_bytes", &tamt::cuda::workspace_bytes);
  m.def(
      "cuda_segmented_kth_smallest",
      [](int dtype, int64_t nseg, int64_t meta, int64_t total_blocks, int64_t out, int64_t first_hist,
         int first_bits, int64_t workspace, uintptr_t stream) {
        cuda_check(tamt::cuda::segmented_kth_smallest(dtype, nseg, reinterpret_cast<const int64_t*>(meta),
                                                      total_blocks, reinterpret_cast<void*>(out),
                                                      ptr_or_null<int64_t>(first_hist), first_bits,
                                                      reinterpret_cast<void*>(workspace), stream),
                   "cuda_segmented_kth_smallest");
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "cuda_pack_mask",
      [](int64_t mask, int64_t n, int64_t packed, uintptr_t stream) {
        cuda_check(tamt::cuda::pack_mask(reinterpret_cast<const uint8_t*>(mask), n,
                                         reinterpret_cast<uint8_t*>(packed), stream),
                   "cuda_pack_mask");
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "cuda_unpack_mask",
      [](int64_t packed, int64_t n, int64_t mask, uintptr_t stream) {
        cuda_check(tamt::cuda::unpack_mask(reinterpret_cast<const uint8_t*>(packed), n,
                                           reinterpret_cast<uint8_t*>(mask), stream),
                   "cuda_unpack_mask");
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "cuda_binarize_and_mask",
      [](int w_dtype, int s_dtype, int64_t weight, int64_t scores, int64_t threshold, int64_t n, int64_t out,
         uintptr_t stream) {
        cuda_check(tamt::cuda::binarize_and_mask(w_dtype, s_dtype, reinterpret_cast<const void*>(weight),
                                                 reinterpret_cast<const void*>(scores),
                                                 reinterpret_cast<const float*>(threshold), n,
                                                 reinterpret_cast<void*>(out), stream),
                   "cuda_binarize_and_mask");
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "cuda_adamw_scores_step",
      [](int64_t nseg, int64_t meta, int64_t total_blocks, double lr, double beta1, double beta2, double eps,
         double weight_decay, int64_t step, int64_t hist, int hist_bits, uintptr_t stream) {
        AdamWScalars hp{lr, beta1, beta2, eps, weight_decay, step};
        cuda_check(tamt::cuda::adamw_scores_step(nseg, reinterpret_cast<const int64_t*>(meta), total_blocks, hp,
                                                 reinterpret_cast<int64_t*>(hist), hist_bits, stream),
                   "cuda_adamw_scores_step");
      },
      py::call_guard<py::gil_scoped_release>());
#endif
}
