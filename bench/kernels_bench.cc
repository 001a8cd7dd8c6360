// qs_kernels_bench: y = x W^T at batch 1 (and a few rows) for each quantized CPU kernel, next to
// LibTorch's packed kernels and a dense at::linear in bf16 and fp32, on 2 threads. Kernels are
// timed in interleaved rounds (each round runs every kernel), so the printed ratios compare
// runs side by side under the same machine load; the median over rounds is reported.
//
// Usage: qs_kernels_bench [rounds=15] [threads=2]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "quant/kernels/cpu_pack.h"
#include "quant/kernels/dense.h"
#include "quant/kernels/packed_weight.h"

namespace qk = quantserve::quant::kernels;
using qk::internal::CpuKernel;
using qk::internal::CpuPackOptions;

namespace {

struct Candidate {
  std::string name;
  std::function<at::Tensor()> run;
  std::vector<double> ms;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Times each candidate `iters` calls per round, candidates interleaved, `rounds` rounds.
void Race(const std::string& title, std::vector<Candidate>& cands, int rounds) {
  const int64_t iters = 10;
  for (auto& c : cands) c.run();  // warm-up
  for (int r = 0; r < rounds; ++r) {
    for (auto& c : cands) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < iters; ++i) c.run();
      const auto t1 = std::chrono::steady_clock::now();
      c.ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count() / iters);
    }
  }
  std::printf("\n== %s\n", title.c_str());
  const double base = Median(cands[0].ms);
  for (const auto& c : cands) {
    const double m = Median(c.ms);
    std::printf("  %-34s %8.3f ms   speedup vs %s: %5.2fx\n", c.name.c_str(), m,
                cands[0].name.c_str(), base / m);
  }
}

std::unique_ptr<qk::PackedWeight> Must(absl::StatusOr<std::unique_ptr<qk::PackedWeight>> p) {
  if (!p.ok()) {
    std::fprintf(stderr, "pack failed: %s\n", std::string(p.status().message()).c_str());
    std::exit(1);
  }
  return *std::move(p);
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 15;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  at::set_num_threads(threads);
  at::manual_seed(0);
  std::printf("threads=%d rounds=%d cpu_kernel_level=%s\n", at::get_num_threads(), rounds,
              qk::CpuKernelLevel().c_str());
  const bool avx512 = qk::internal::HasAvx512Vnni();
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{5632, 2048}, {2048, 5632}};
  for (const auto& [n, k] : shapes) {
    const at::Tensor wf = at::randn({n, k}) * 0.02;
    const at::Tensor wb = wf.to(at::kBFloat16);
    // int8 rowwise.
    qk::Int8RowwiseWeight w8{at::randint(-127, 128, {n, k}, at::kChar), at::rand({n}) * 1e-3};
    auto aten8 = Must(qk::internal::PackInt8RowwiseCpu(w8, CpuPackOptions{CpuKernel::kAten, 4}));
    auto ours8 = Must(qk::internal::PackInt8RowwiseCpu(w8, CpuPackOptions{CpuKernel::kAvx2, 4}));
    // 4-bit.
    auto lut4 = [&](bool affine, int64_t g) {
      qk::Lut4Weight w;
      w.codes = at::randint(0, 16, {n, k}, at::kByte);
      for (int i = 0; i < 16; ++i) w.lut[i] = affine ? i : (i - 7.5f) / 7.5f;
      w.scale = at::rand({n, k / g}) * 1e-3;
      if (affine) w.offset = at::randn({n, k / g}) * 1e-3;
      w.group_size = g;
      return w;
    };
    for (int64_t m : {int64_t{1}, int64_t{4}}) {
      for (auto dtype : {at::kFloat, at::kBFloat16}) {
        const at::Tensor x = at::randn({m, k}).to(dtype);
        const std::string tag = std::to_string(n) + "x" + std::to_string(k) + " M=" +
                                std::to_string(m) + " x=" + c10::toString(dtype);
        std::vector<Candidate> c = {
            {"dense bf16 at::linear", [&] { return at::linear(x.to(at::kBFloat16), wb); }, {}},
            {"dense bf16 " + qk::DenseKernelName(wb),
             [&] { return qk::DenseLinear(x.to(at::kBFloat16), wb, at::Tensor()); }, {}},
            {"dense fp32 at::linear", [&] { return at::linear(x.to(at::kFloat), wf); }, {}},
            {"int8_q16_avx2", [&] { return ours8->Matmul(x); }, {}},
            // Last: OpenMP's spinning workers would slow the candidate after it (see below).
            {"aten_weight_int8pack_mm", [&] { return aten8->Matmul(x); }, {}},
        };
        Race("int8 " + tag, c, rounds);
        std::vector<Candidate> c4 = {
            {"dense bf16 at::linear", [&] { return at::linear(x.to(at::kBFloat16), wb); }, {}}};
        std::vector<std::unique_ptr<qk::PackedWeight>> keep;
        // LibTorch's int4 kernel runs on OpenMP, whose workers spin after it and take a CPU
        // from whatever runs next: its candidates go last, after a dense one, not before ours.
        std::vector<Candidate> aten4;
        for (int64_t g : {32, 64, 128, 256}) {
          const qk::Lut4Weight w = lut4(true, g);
          keep.push_back(Must(qk::internal::PackLut4Cpu(w, CpuPackOptions{CpuKernel::kAten, 4})));
          keep.push_back(Must(qk::internal::PackLut4Cpu(w, CpuPackOptions{CpuKernel::kAvx2, 4})));
          const qk::PackedWeight* a = keep[keep.size() - 2].get();
          const qk::PackedWeight* o = keep.back().get();
          aten4.push_back({"aten_int4pack g" + std::to_string(g), [a, &x] { return a->Matmul(x); }, {}});
          c4.push_back({"lut4_q16_avx2 affine g" + std::to_string(g),
                        [o, &x] { return o->Matmul(x); }, {}});
          if (avx512) {
            keep.push_back(
                Must(qk::internal::PackLut4Cpu(w, CpuPackOptions{CpuKernel::kAvx512, 4})));
            const qk::PackedWeight* v = keep.back().get();
            c4.push_back({"lut4_q16_avx512 affine g" + std::to_string(g),
                          [v, &x] { return v->Matmul(x); }, {}});
          }
        }
        const qk::Lut4Weight nf = lut4(false, 64);
        for (CpuKernel kernel : {CpuKernel::kAvx2, CpuKernel::kAvx512}) {
          if (kernel == CpuKernel::kAvx512 && !avx512) continue;
          keep.push_back(Must(qk::internal::PackLut4Cpu(nf, CpuPackOptions{kernel, 4})));
          const qk::PackedWeight* o = keep.back().get();
          c4.push_back({o->name() + " table g64", [o, &x] { return o->Matmul(x); }, {}});
        }
        if (avx512) {  // the opt-in int8 activations: affine g128 and the NF4 table g64
          for (qk::Lut4Weight w : {lut4(true, 128), lut4(false, 64)}) {
            w.activation_bits = 8;
            keep.push_back(Must(qk::internal::PackLut4Cpu(w, CpuPackOptions{CpuKernel::kAuto, 4})));
            const qk::PackedWeight* o = keep.back().get();
            c4.push_back({o->name() + (w.group_size == 128 ? " affine g128" : " table g64"),
                          [o, &x] { return o->Matmul(x); }, {}});
          }
        }
        for (Candidate& a : aten4) c4.push_back(std::move(a));
        Race("4-bit " + tag, c4, rounds);
      }
    }
  }
  return 0;
}
