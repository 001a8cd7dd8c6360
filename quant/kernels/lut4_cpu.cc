// CPU kernels for Lut4Weight: our integer kernel over the word layout (AVX2 or scalar), with
// dequantized tiles for prefill, and LibTorch's _weight_int4pack_mm_for_cpu for affine tables
// (chosen only on CPUs without AVX2, or by tests and the micro-benchmark).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/torch_status.h"
#include "quant/kernels/cpu_kernels.h"
#include "quant/kernels/cpu_pack.h"
#include "quant/kernels/worker_pool.h"

namespace quantserve::quant::kernels::internal {

bool HasAvx2Fma() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}

bool HasAvx512Vnni() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
  }();
  return has;
}

void PairQ16Rows(const Q16Rows& x, int64_t rows, int64_t kp2, int16_t* q2, float* dv) {
  const int64_t nb = x.kp / kQ16Block;
  for (int64_t m = 0; m < rows; ++m) {
    const int16_t* q = x.q + m * x.kp;
    const float* d = x.d + m * nb;
    int16_t* o = q2 + m * kp2;
    float* ov = dv + m * (kp2 / 4);
    for (int64_t c = 0; c < kp2 / kLut4Pair; ++c) {
      const int64_t base = c * kLut4Pair;
      for (int p = 0; p < 4; ++p) {
        for (int i = 0; i < 32; ++i) {
          const int64_t col = base + (i < 16 ? 16 * p + i : kLut4Chunk + 16 * p + i - 16);
          o[base + 32 * p + i] = col < x.kp ? q[col] : 0;
        }
      }
      // Blocks 4c..4c+3 (past kp: d = 0, so the padded chunk adds nothing).
      float blk[4];
      for (int b = 0; b < 4; ++b) blk[b] = 4 * c + b < nb ? d[4 * c + b] : 0.f;
      for (int i = 0; i < 8; ++i) {
        ov[32 * c + i] = blk[0];
        ov[32 * c + 8 + i] = blk[2];
        ov[32 * c + 16 + i] = blk[1];
        ov[32 * c + 24 + i] = blk[3];
      }
    }
  }
}

bool HasNativeBf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has;
}

namespace {

// The input buffer of GemvInput, per thread, grown to the largest matmul seen and reused.
std::vector<float>& ThreadGemvInputBuffer() {
  thread_local std::vector<float> buffer;
  return buffer;
}

template <typename T>
void RowsToFloat(const T* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}
template <typename T>
void FloatToRows(const float* src, int64_t n, T* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
}

}  // namespace

GemvInput::GemvInput(const at::Tensor& x2) : m_(x2.size(0)) {
  const int64_t count = x2.numel();
  const at::ScalarType t = x2.scalar_type();
  if (t == at::kFloat && x2.is_contiguous()) {
    x_ = x2.const_data_ptr<float>();
    return;
  }
  const at::Tensor xc = x2.contiguous();
  std::vector<float>& buffer = ThreadGemvInputBuffer();
  buffer.resize(count);
  if (t == at::kBFloat16) {
    RowsToFloat(xc.const_data_ptr<at::BFloat16>(), count, buffer.data());
  } else if (t == at::kHalf) {
    RowsToFloat(xc.const_data_ptr<at::Half>(), count, buffer.data());
  } else {
    const at::Tensor xf = xc.to(at::kFloat);
    std::copy_n(xf.const_data_ptr<float>(), count, buffer.data());
  }
  x_ = buffer.data();
}

GemvOutput::GemvOutput(const at::Tensor& x, int64_t m, int64_t n) : count_(m * n) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  out_ = at::empty(shape, x.options());
  if (out_.scalar_type() == at::kFloat) {
    y_ = out_.mutable_data_ptr<float>();
  } else {
    buffer_.resize(count_);
    y_ = buffer_.data();
  }
}

at::Tensor GemvOutput::Finish() {
  const at::ScalarType t = out_.scalar_type();
  if (t == at::kBFloat16) {
    FloatToRows(y_, count_, out_.mutable_data_ptr<at::BFloat16>());
  } else if (t == at::kHalf) {
    FloatToRows(y_, count_, out_.mutable_data_ptr<at::Half>());
  } else if (t != at::kFloat) {
    out_.copy_(at::from_blob(y_, out_.sizes(), at::kFloat));
  }
  return out_;
}

Q16Rows Q16Input::rows() const {
  Q16Rows r;
  r.q = q.data();
  r.d = d.data();
  r.bsum = bsum.data();
  r.kp = kp;
  return r;
}

at::Tensor Q16Input::q_tensor() const {
  return at::from_blob(const_cast<int16_t*>(q.data()), {m, kp}, at::kShort).clone();
}
at::Tensor Q16Input::d_tensor() const {
  return at::from_blob(const_cast<float*>(d.data()), {m, kp / kQ16Block}, at::kFloat).clone();
}
at::Tensor Q16Input::bsum_tensor() const {
  return at::from_blob(const_cast<float*>(bsum.data()), {m, kp / kQ16Block}, at::kFloat).clone();
}
int ParallelForThreads(int64_t tasks) {
  std::mutex mu;
  std::set<std::thread::id> ids;
  at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
    // Enough work per task that one thread cannot take them all before the others start.
    volatile double sink = 0;
    for (int64_t i = b; i < e; ++i) {
      for (int j = 0; j < 2000000; ++j) sink = sink + j;
    }
    std::lock_guard<std::mutex> lock(mu);
    ids.insert(std::this_thread::get_id());
  });
  return static_cast<int>(ids.size());
}

bool Lut4Avx512Wins(bool affine, int64_t group_size) {
  // Measured in the model (qs_decode_bench A/B on Zen 4, bench/RESULTS.md section 11): value
  // tables (NF4/FP4) with groups of 64+ decode ~11% faster on AVX-512 (byte lookups, one load
  // per 128 codes); affine tables decode ~18% faster on AVX2 even where the single-layer
  // kernel bench favours AVX-512 (groups of 128: 0.18 vs 0.20 ms), so they stay on AVX2.
  return !affine && group_size % kLut4Chunk == 0;
}

float Q16TableScale(const std::array<float, 16>& lut) {
  // Largest int16 table value: four products of it with a q16 code (|q| <= 32767) fit an
  // int32 lane, which is what one 64-column chunk adds up per lane before converting to float.
  constexpr float kTableMax = 16383.f;
  bool affine = true;
  float amax = 0.f;
  for (int i = 0; i < 16; ++i) {
    affine = affine && lut[i] == static_cast<float>(i);
    amax = std::max(amax, std::fabs(lut[i]));
  }
  return affine || amax == 0.f ? 1.f : kTableMax / amax;
}

float Q8TableScale(const std::array<float, 16>& lut) {
  bool affine = true;
  float amax = 0.f;
  for (int i = 0; i < 16; ++i) {
    affine = affine && lut[i] == static_cast<float>(i);
    amax = std::max(amax, std::fabs(lut[i]));
  }
  return affine || amax == 0.f ? 1.f : 127.f / amax;
}

std::array<float, 16> Q8TableValues(const std::array<float, 16>& lut) {
  const float s8 = Q8TableScale(lut);
  if (s8 == 1.f && lut[15] == 15.f) return lut;  // affine: the codes themselves
  std::array<float, 16> out{};
  for (int i = 0; i < 16; ++i) out[i] = std::nearbyint(lut[i] * s8) / s8;
  return out;
}

at::Tensor DequantizeQ8PairRows(const at::Tensor& q, const at::Tensor& dv, int64_t k) {
  const int64_t m = q.size(0), kp2 = q.size(1);
  at::Tensor out = at::zeros({m, kp2}, at::kFloat);
  const int8_t* qp = q.data_ptr<int8_t>();
  const float* dp = dv.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t b = 0; b < kp2; ++b) {
      const int64_t pair = b / kLut4Pair, col = Q8PairColumn(b % kLut4Pair);
      const float d = dp[r * (kp2 / 8) + pair * 16 + (col / kLut4Chunk) * 8];
      o[r * kp2 + pair * kLut4Pair + col] = d * qp[r * kp2 + b];
    }
  }
  return out.narrow(1, 0, k).contiguous();
}

at::Tensor DequantizeQ16(const Q16Input& q, int64_t k) {
  const at::Tensor x = q.q_tensor().to(at::kFloat).view({q.m, -1, kQ16Block}) *
                       q.d_tensor().unsqueeze(-1);
  return x.view({q.m, -1}).narrow(1, 0, k).contiguous();
}

Q16Input QuantizeQ16(const float* x, int64_t m, int64_t k, bool avx2) {
  Q16Input out;
  out.m = m;
  out.kp = RoundUp(k, kLut4Chunk);
  out.q.resize(m * out.kp);
  out.d.resize(m * out.kp / kQ16Block);
  out.bsum.resize(m * out.kp / kQ16Block);
  if (avx2) {
    QuantizeQ16Avx2(x, k, m, k, out.kp, out.q.data(), out.d.data(), out.bsum.data());
  } else {
    QuantizeQ16Scalar(x, k, m, k, out.kp, out.q.data(), out.d.data(), out.bsum.data());
  }
  return out;
}

Q16Input QuantizeQ16(const at::Tensor& x, bool avx2) {
  return QuantizeQ16(x.const_data_ptr<float>(), x.size(0), x.size(1), avx2);
}

void QuantizeQ16Scalar(const float* x, int64_t ldx, int64_t rows, int64_t k, int64_t kp,
                       int16_t* q, float* d, float* bsum) {
  const int64_t nb = kp / kQ16Block;
  for (int64_t m = 0; m < rows; ++m) {
    const float* xr = x + m * ldx;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t k0 = b * kQ16Block;
      const int64_t k1 = std::min(k, k0 + kQ16Block);
      float mx = 0.f;
      for (int64_t i = k0; i < k1; ++i) mx = std::max(mx, std::fabs(xr[i]));
      const float inv = mx > 0.f ? 32767.f / mx : 0.f;
      int32_t isum = 0;
      for (int64_t i = k0; i < k0 + kQ16Block; ++i) {
        // nearbyint rounds half to even, as the AVX2 conversion does.
        const int16_t v = i < k1 ? static_cast<int16_t>(std::nearbyint(xr[i] * inv)) : 0;
        q[m * kp + i] = v;
        isum += v;
      }
      const float scale = mx / 32767.f;
      d[m * nb + b] = scale;
      bsum[m * nb + b] = scale * static_cast<float>(isum);
    }
  }
}

namespace {

// The code of column j of a chunk in the word layout (see cpu_kernels.h).
inline int Lut4Code(const uint8_t* chunk, int j) {
  const int word = j % 16;
  const int nibble = j / 16;
  const uint16_t v = static_cast<uint16_t>(chunk[2 * word] | (chunk[2 * word + 1] << 8));
  return (v >> (4 * nibble)) & 0x0F;
}

}  // namespace

void Lut4Q16Scalar(const Lut4Layout& w, const Q16Rows& x, const float* xg, int64_t rows,
                   float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t groups = w.k / w.group_size;
  const int64_t nb = x.kp / kQ16Block;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.packed + n * (x.kp / 2);
    for (int64_t m = 0; m < rows; ++m) {
      const int16_t* q = x.q + m * x.kp;
      float total = 0.f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* chunk = row + (b / 2) * (kLut4Chunk / 2);
        int64_t dot = 0;  // NF4's table reaches 16383: 32 products can pass 2^31
        for (int j = 0; j < kQ16Block; ++j) {
          const int col = static_cast<int>((b % 2) * kQ16Block + j);
          dot += w.table[Lut4Code(chunk, col)] * q[b * kQ16Block + j];
        }
        const int64_t g = std::min(b * kQ16Block / w.group_size, groups - 1);
        total += static_cast<float>(dot) * x.d[m * nb + b] * w.scale[n * groups + g];
      }
      if (w.offset != nullptr) {
        for (int64_t g = 0; g < groups; ++g) total += w.offset[n * groups + g] * xg[m * groups + g];
      }
      y[m * ldy + n] = total;
    }
  }
}

void QuantizeQ8PairRows(const float* x, int64_t ldx, int64_t rows, int64_t k, int64_t kp2,
                        int8_t* q, float* dv, float* bsum) {
  const int64_t chunks = kp2 / kQ8Block;
  std::vector<int8_t> natural(kQ8Block);
  for (int64_t m = 0; m < rows; ++m) {
    const float* xr = x + m * ldx;
    int8_t* qr = q + m * kp2;
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t k0 = c * kQ8Block;
      const int64_t k1 = std::min(k, k0 + kQ8Block);
      float mx = 0.f;
      for (int64_t i = k0; i < k1; ++i) mx = std::max(mx, std::fabs(xr[i]));
      const float inv = mx > 0.f ? 127.f / mx : 0.f;
      int32_t isum = 0;
      for (int64_t i = 0; i < kQ8Block; ++i) {
        // Adding and subtracting 1.5 * 2^23 rounds half to even (|v| <= 127) without a libm
        // call, and vectorizes.
        const float v = k0 + i < k1 ? xr[k0 + i] * inv : 0.f;
        const float r = (v + 12582912.f) - 12582912.f;
        natural[i] = static_cast<int8_t>(r);
        isum += natural[i];
      }
      const float d = mx / 127.f;
      bsum[m * chunks + c] = d * static_cast<float>(isum);
      // This chunk's 64 bytes of its pair, in nibble order.
      const int64_t pair = c / 2, side = c % 2;
      for (int64_t b = 0; b < kLut4Pair; ++b) {
        if ((b % 64) / 32 != side) continue;
        qr[pair * kLut4Pair + b] = natural[Q8PairColumn(b) - side * kLut4Chunk];
      }
      float* dvp = dv + m * (kp2 / 8) + pair * 16 + side * 8;
      for (int i = 0; i < 8; ++i) dvp[i] = d;
    }
  }
}

void Lut4Q8Scalar(const Lut4Layout& w, const uint8_t* t8, float rescale, const Q8PairRows& x,
                  const float* xg, int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t groups = w.k / w.group_size;
  const int64_t chunks = x.kp2 / kQ8Block;
  const int64_t kp = RoundUp(w.k, kLut4Chunk);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.packed + n * (kp / 2);
    const float* scale = w.scale + n * groups;
    for (int64_t m = 0; m < rows; ++m) {
      const int8_t* q = x.q + m * x.kp2;
      float total = 0.f;
      for (int64_t c = 0; c < chunks && c * kLut4Chunk < kp; ++c) {
        const uint8_t* chunk = row + c * (kLut4Chunk / 2);
        const int64_t pair = c / 2, side = c % 2;
        int32_t dot = 0;
        for (int64_t b = 0; b < kLut4Pair; ++b) {
          if ((b % 64) / 32 != side) continue;
          const int code = Lut4Code(chunk, static_cast<int>(Q8PairColumn(b) - side * kLut4Chunk));
          dot += (t8 != nullptr ? t8[code] : code) * q[pair * kLut4Pair + b];
        }
        const float d = x.dv[m * (x.kp2 / 8) + pair * 16 + side * 8];
        total += static_cast<float>(dot) * d * scale[c * kLut4Chunk / w.group_size];
      }
      const float* g = xg != nullptr ? xg + m * groups : nullptr;
      if (t8 != nullptr) {
        float shift = 0.f;
        for (int64_t i = 0; i < groups; ++i) shift += scale[i] * g[i];
        total = (total - 128.f * shift) * rescale;
      }
      if (w.offset != nullptr) {
        for (int64_t i = 0; i < groups; ++i) total += w.offset[n * groups + i] * g[i];
      }
      y[m * ldy + n] = total;
    }
  }
}

void Lut4DequantScalar(const Lut4Layout& w, int64_t n0, int64_t n1, float* out) {
  const int64_t kp = RoundUp(w.k, kLut4Chunk);
  const int64_t groups = w.k / w.group_size;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.packed + n * (kp / 2);
    float* o = out + (n - n0) * w.k;
    for (int64_t k = 0; k < w.k; ++k) {
      const int64_t g = k / w.group_size;
      const float s = w.scale[n * groups + g];
      const float b = w.offset != nullptr ? w.offset[n * groups + g] : 0.f;
      o[k] = w.lut[Lut4Code(row + (k / kLut4Chunk) * (kLut4Chunk / 2), k % kLut4Chunk)] * s + b;
    }
  }
}

namespace {

// Output rows per parallel task: a few tens of KiB of codes, enough to amortize the dispatch.
int64_t GrainRows(int64_t bytes_per_row) {
  return std::max<int64_t>(16, (64 * 1024) / std::max<int64_t>(1, bytes_per_row));
}

// Our integer kernel over the word layout (see cpu_kernels.h).
class Lut4Cpu final : public PackedWeight {
 public:
  // `level` is kScalar, kAvx2 or kAvx512 (resolved by the caller; kAvx512 also uses AVX2 for
  // the activations and the prefill tiles).
  // q8: int8 activations (Lut4Weight::activation_bits == 8; group_size % 64 == 0), with the
  // AVX-512 VNNI kernel at kAvx512 and the scalar twin otherwise.
  Lut4Cpu(const Lut4Weight& w, CpuKernel level, bool q8, int64_t max_gemv_rows)
      : name_(absl::StrCat("lut4_", q8 ? "q8" : "q16", "_",
                           level == CpuKernel::kAvx512 ? "avx512"
                           : level == CpuKernel::kAvx2 ? "avx2"
                                                       : "scalar")),
        q8_(q8),
        avx2_(level == CpuKernel::kAvx2 || level == CpuKernel::kAvx512),
        avx512_(level == CpuKernel::kAvx512),
        max_gemv_rows_(max_gemv_rows),
        n_(w.codes.size(0)),
        k_(w.codes.size(1)),
        kp_(RoundUp(k_, kLut4Chunk)),
        group_size_(w.group_size),
        offset_(w.offset.defined() ? w.offset.to(at::kFloat).contiguous().clone() : at::Tensor()),
        perm_(w.input_permutation.defined() ? w.input_permutation.contiguous().clone()
                                            : at::Tensor()) {
    affine_ = true;
    for (int i = 0; i < 16; ++i) affine_ = affine_ && w.lut[i] == static_cast<float>(i);
    // The int16 table is the float one times table_scale; the group scales absorb 1/table_scale.
    const float table_scale = Q16TableScale(w.lut);
    for (int i = 0; i < 16; ++i) {
      lut_[i] = w.lut[i] * table_scale;
      table_[i] = static_cast<int16_t>(std::nearbyint(lut_[i]));
    }
    if (!affine_) {
      const float s8 = Q8TableScale(w.lut);
      for (int i = 0; i < 16; ++i) {
        table8_[i] = static_cast<uint8_t>(std::nearbyint(w.lut[i] * s8) + 128);
      }
      rescale8_ = table_scale / s8;
    }
    scale_ = (w.scale.to(at::kFloat) / table_scale).contiguous();
    // Word layout: byte 2j of a chunk = code[j] | code[16 + j] << 4, byte 2j + 1 =
    // code[32 + j] | code[48 + j] << 4.
    at::Tensor codes = at::bitwise_and(w.codes.contiguous(), 0x0F);
    if (kp_ != k_) codes = at::constant_pad_nd(codes, {0, kp_ - k_}, 0);
    const at::Tensor c = codes.view({n_, kp_ / kLut4Chunk, 4, 16});
    auto nibbles = [&](int lo, int hi) {
      return at::bitwise_or(c.select(2, lo), at::bitwise_left_shift(c.select(2, hi), 4));
    };
    packed_ = at::stack({nibbles(0, 1), nibbles(2, 3)}, -1).to(at::kByte).reshape({n_, kp_ / 2})
                  .contiguous();
  }

  at::Tensor Matmul(const at::Tensor& x) const override {
    const absl::Status s = CheckInput(x, k_, c10::Device(c10::kCPU), name_);
    TORCH_CHECK(s.ok(), std::string(s.message()));
    at::Tensor x2 = x.reshape({-1, k_});
    if (perm_.defined()) x2 = x2.index_select(1, perm_);
    const int64_t m = x2.size(0);
    const Lut4Layout layout = Layout();
    if (m > 0 && m <= max_gemv_rows_) {
      const GemvInput in(x2);
      GemvOutput out(x, m, n_);
      const PreparedInput prepared = Prepare(in.x(), m);
      float* y = out.y();
      ParallelFor(0, n_, GrainRows(kp_ / 2),
                  [&](int64_t n0, int64_t n1) { Run(prepared, layout, y, n_, n0, n1); });
      return out.Finish();
    }
    std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
    out_shape.back() = n_;
    if (m == 0) return at::empty(out_shape, x.options());
    // Prefill with bf16 activations on a CPU with native bf16 multiplies bf16 tiles (below);
    // everything else reads the input in float32.
    const bool bf16_gemm = x.scalar_type() == at::kBFloat16 && HasNativeBf16();
    const at::Tensor xf = bf16_gemm ? x2.contiguous() : x2.to(at::kFloat).contiguous();
    at::Tensor y = at::empty({m, n_}, x2.options().dtype(at::kFloat));
    // Prefill: tiles of the weight are dequantized into a per-task buffer and multiplied
    // there, so no float copy of the whole layer is ever made. With bf16 activations on a
    // CPU with native bf16 the tiles are rounded to bf16 and multiplied in bf16, as the bf16
    // model and transformers (dequantize to the compute dtype, F.linear) do; else float32.
    // The tasks run ATen ops on OpenMP's threads: they carry the caller's thread-local state
    // (InferenceMode above all, or writing into y would be refused).
    const at::ThreadLocalState state;
    at::parallel_for(0, n_, kDequantTile, [&](int64_t n0, int64_t n1) {
      const at::ThreadLocalStateGuard guard(state);
      std::vector<float> tile(kDequantTile * k_);
      for (int64_t t0 = n0; t0 < n1; t0 += kDequantTile) {
        const int64_t t1 = std::min(n1, t0 + kDequantTile);
        if (avx2_) {
          Lut4DequantAvx2(layout, t0, t1, tile.data());
        } else {
          Lut4DequantScalar(layout, t0, t1, tile.data());
        }
        at::Tensor wt = at::from_blob(tile.data(), {t1 - t0, k_});
        if (bf16_gemm) wt = wt.to(at::kBFloat16);
        y.narrow(1, t0, t1 - t0).copy_(at::mm(xf, wt.t()));
      }
    });
    return y.to(x.scalar_type()).view(out_shape);
  }

  // MatmulSameInput's shared path: true when `other` quantizes its input exactly as this one
  // does (same K, groups, activation precision, kernel level, no permutation).
  bool SharesInputWith(const Lut4Cpu& other) const {
    return k_ == other.k_ && group_size_ == other.group_size_ && q8_ == other.q8_ &&
           avx2_ == other.avx2_ && avx512_ == other.avx512_ && !perm_.defined() &&
           !other.perm_.defined() && max_gemv_rows_ == other.max_gemv_rows_;
  }

  // y_i = x W_i^T for weights that all SharesInputWith(*ws[0]): the input prepared once, one
  // parallel loop over the rows of all of them. nullopt when x is not decode-sized.
  static std::optional<std::vector<at::Tensor>> MatmulShared(const std::vector<const Lut4Cpu*>& ws,
                                                             const at::Tensor& x) {
    const Lut4Cpu& first = *ws[0];
    const absl::Status s = CheckInput(x, first.k_, c10::Device(c10::kCPU), first.name_);
    TORCH_CHECK(s.ok(), std::string(s.message()));
    const at::Tensor x2 = x.reshape({-1, first.k_});
    const int64_t m = x2.size(0);
    if (m == 0 || m > first.max_gemv_rows_) return std::nullopt;
    const GemvInput in(x2);
    const PreparedInput prepared = first.Prepare(in.x(), m);
    std::vector<GemvOutput> outs;
    std::vector<Lut4Layout> layouts;
    std::vector<int64_t> starts;  // each weight's first row in the loop over all rows
    int64_t total = 0;
    for (const Lut4Cpu* w : ws) {
      outs.emplace_back(x, m, w->n_);
      layouts.push_back(w->Layout());
      starts.push_back(total);
      total += w->n_;
    }
    ParallelFor(0, total, GrainRows(first.kp_ / 2), [&](int64_t b, int64_t e) {
      for (size_t i = 0; i < ws.size(); ++i) {
        const int64_t lo = std::max(b, starts[i]);
        const int64_t hi = std::min(e, starts[i] + ws[i]->n_);
        if (lo < hi) {
          ws[i]->Run(prepared, layouts[i], outs[i].y(), ws[i]->n_, lo - starts[i], hi - starts[i]);
        }
      }
    });
    std::vector<at::Tensor> ys;
    for (GemvOutput& out : outs) ys.push_back(out.Finish());
    return ys;
  }

  const std::string& name() const override { return name_; }
  // The inverse of the word layout built in the constructor.
  std::optional<at::Tensor> Codes() const override {
    const at::Tensor b = packed_.view({n_, kp_ / kLut4Chunk, 16, 2});
    const at::Tensor lo = b.select(3, 0);  // code[j] | code[16 + j] << 4
    const at::Tensor hi = b.select(3, 1);  // code[32 + j] | code[48 + j] << 4
    return at::stack({at::bitwise_and(lo, 0x0F), at::bitwise_right_shift(lo, 4),
                      at::bitwise_and(hi, 0x0F), at::bitwise_right_shift(hi, 4)},
                     2)
        .reshape({n_, kp_})
        .narrow(1, 0, k_)
        .contiguous();
  }
  int64_t bytes() const override {
    int64_t b = packed_.nbytes() + scale_.nbytes() + sizeof(lut_) + sizeof(table_);
    if (offset_.defined()) b += offset_.nbytes();
    if (perm_.defined()) b += perm_.nbytes();
    return b;
  }

 private:
  // Weight rows per dequantized prefill tile (64 x K floats stay in L2 for K <= 4096).
  static constexpr int64_t kDequantTile = 64;

  // A decode-size input quantized for this weight's kernel (int8 or int16 rows, with the
  // per-group sums zero points and tables need). Weights for which SharesInputWith() holds take
  // the same PreparedInput, so projections reading one input (q/k/v, gate/up) quantize it once.
  struct PreparedInput {
    int64_t m = 0;
    std::vector<int8_t> q8;      // q8: Q8PairRows
    std::vector<float> dv;       // q8 and the AVX-512 q16 kernel
    std::vector<float> bsum;     // q8
    Q16Input q16;                // q16
    std::vector<int16_t> q16p;   // q16 on AVX-512: pair order
    std::vector<float> xg;       // [m, K / group_size]: each group's sum of the quantized row
  };

  PreparedInput Prepare(const float* x, int64_t m) const {
    PreparedInput p;
    p.m = m;
    const int64_t groups = k_ / group_size_;
    p.xg.assign(m * groups, 0.f);
    if (q8_) {
      const int64_t kp2 = RoundUp(k_, kLut4Pair);
      const int64_t chunks = kp2 / kQ8Block;
      p.q8.resize(m * kp2);
      p.dv.resize(m * kp2 / 8);
      p.bsum.resize(m * chunks);
      QuantizeQ8PairRows(x, k_, m, k_, kp2, p.q8.data(), p.dv.data(), p.bsum.data());
      const int64_t per_group = group_size_ / kQ8Block;
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t c = 0; c < k_ / kQ8Block; ++c) {
          p.xg[r * groups + c / per_group] += p.bsum[r * chunks + c];
        }
      }
      return p;
    }
    p.q16 = QuantizeQ16(x, m, k_, avx2_);
    const Q16Rows rows = p.q16.rows();
    const int64_t blocks = group_size_ / kQ16Block;
    for (int64_t r = 0; r < m; ++r) {
      const float* bsum = rows.bsum + r * (kp_ / kQ16Block);
      for (int64_t b = 0; b < k_ / kQ16Block; ++b) p.xg[r * groups + b / blocks] += bsum[b];
    }
    if (avx512_) {
      const int64_t kp2 = RoundUp(k_, kLut4Pair);
      p.q16p.resize(m * kp2);
      p.dv.resize(m * kp2 / 4);
      PairQ16Rows(rows, m, kp2, p.q16p.data(), p.dv.data());
    }
    return p;
  }

  // Output rows [n0, n1) of y = x W^T for a prepared x; y has row stride ldy.
  void Run(const PreparedInput& p, const Lut4Layout& layout, float* y, int64_t ldy, int64_t n0,
           int64_t n1) const {
    const int64_t m = p.m;
    if (q8_) {
      const float* xgp = offset_.defined() || !affine_ ? p.xg.data() : nullptr;
      const uint8_t* t8 = affine_ ? nullptr : table8_.data();
      const Q8PairRows rows{p.q8.data(), p.dv.data(), p.bsum.data(), RoundUp(k_, kLut4Pair)};
      if (avx512_) {
        Lut4Q8Avx512(layout, t8, rescale8_, rows, xgp, m, y, ldy, n0, n1);
      } else {
        Lut4Q8Scalar(layout, t8, rescale8_, rows, xgp, m, y, ldy, n0, n1);
      }
      return;
    }
    const float* xgp = offset_.defined() ? p.xg.data() : nullptr;
    if (avx512_) {
      const Q16PairRows pairs{p.q16p.data(), p.dv.data(), RoundUp(k_, kLut4Pair)};
      Lut4Q16Avx512(layout, pairs, xgp, m, y, ldy, n0, n1);
    } else if (avx2_) {
      Lut4Q16Avx2(layout, p.q16.rows(), xgp, m, y, ldy, n0, n1);
    } else {
      Lut4Q16Scalar(layout, p.q16.rows(), xgp, m, y, ldy, n0, n1);
    }
  }

  Lut4Layout Layout() const {
    Lut4Layout l;
    l.packed = packed_.data_ptr<uint8_t>();
    l.scale = scale_.data_ptr<float>();
    l.offset = offset_.defined() ? offset_.data_ptr<float>() : nullptr;
    l.table = table_.data();
    l.lut = lut_.data();
    l.affine = affine_;
    l.k = k_;
    l.group_size = group_size_;
    return l;
  }

  const std::string name_;
  const bool q8_;
  const bool avx2_;
  const bool avx512_;
  const int64_t max_gemv_rows_;
  const int64_t n_, k_, kp_, group_size_;
  std::array<float, 16> lut_{};
  std::array<int16_t, 16> table_{};
  std::array<uint8_t, 16> table8_{};  // q8 tables: round(lut * s8) + 128
  float rescale8_ = 1.f;              // Q16TableScale / Q8TableScale
  bool affine_ = false;
  at::Tensor packed_, scale_, offset_, perm_;
};

// LibTorch's int4 CPU kernel: w = (q - 8) * s + z per [K / g, N] group, so z = offset + 8 s.
// Scales and zeros are kept in each activation dtype it accepts (x dtype must match).
class Lut4AtenInt4 final : public PackedWeight {
 public:
  explicit Lut4AtenInt4(const Lut4Weight& w)
      : n_(w.codes.size(0)), k_(w.codes.size(1)), group_size_(w.group_size) {
    packed_ = at::_convert_weight_to_int4pack_for_cpu(w.codes.to(at::kInt).contiguous(), 8);
    const at::Tensor s = w.scale.to(at::kFloat);
    const at::Tensor z = (w.offset.defined() ? w.offset.to(at::kFloat) : at::zeros_like(s)) + 8 * s;
    const at::Tensor sz = at::stack({s.t(), z.t()}, -1).contiguous();  // [K / g, N, 2]
    sz_float_ = sz;
    sz_bf16_ = sz.to(at::kBFloat16);
    sz_half_ = sz.to(at::kHalf);
  }

  at::Tensor Matmul(const at::Tensor& x) const override {
    const absl::Status s = CheckInput(x, k_, c10::Device(c10::kCPU), name_);
    TORCH_CHECK(s.ok(), std::string(s.message()));
    const at::Tensor& sz = x.scalar_type() == at::kBFloat16 ? sz_bf16_
                           : x.scalar_type() == at::kHalf   ? sz_half_
                                                            : sz_float_;
    std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
    out_shape.back() = n_;
    const at::Tensor x2 = x.reshape({-1, k_}).contiguous();
    return at::_weight_int4pack_mm_for_cpu(x2, packed_, group_size_, sz).view(out_shape);
  }
  const std::string& name() const override { return name_; }
  int64_t bytes() const override {
    return packed_.nbytes() + sz_float_.nbytes() + sz_bf16_.nbytes() + sz_half_.nbytes();
  }

 private:
  const std::string name_ = "aten_weight_int4pack_mm";
  const int64_t n_, k_, group_size_;
  at::Tensor packed_, sz_float_, sz_bf16_, sz_half_;
};

bool AtenInt4Fits(const Lut4Weight& w) {
  for (int i = 0; i < 16; ++i) {
    if (w.lut[i] != static_cast<float>(i)) return false;
  }
  const int64_t g = w.group_size;
  // _convert_weight_to_int4pack_for_cpu also needs N % 16 == 0.
  return !w.input_permutation.defined() && (g == 32 || g == 64 || g == 128 || g == 256) &&
         w.codes.size(1) % 32 == 0 && w.codes.size(0) % 16 == 0;
}

}  // namespace

std::optional<std::vector<at::Tensor>> Lut4MatmulSameInput(
    const std::vector<const PackedWeight*>& weights, const at::Tensor& x) {
  std::vector<const Lut4Cpu*> ws;
  for (const PackedWeight* w : weights) {
    const auto* lut4 = dynamic_cast<const Lut4Cpu*>(w);
    if (lut4 == nullptr || (!ws.empty() && !ws[0]->SharesInputWith(*lut4))) return std::nullopt;
    ws.push_back(lut4);
  }
  if (ws.empty()) return std::nullopt;
  return Lut4Cpu::MatmulShared(ws, x);
}

absl::StatusOr<std::unique_ptr<PackedWeight>> PackLut4Cpu(const Lut4Weight& w,
                                                          const CpuPackOptions& options) {
  if (absl::Status s = ValidateLut4(w); !s.ok()) return s;
  if (!w.codes.device().is_cpu()) {
    return absl::InvalidArgumentError("lut4 weight: codes must be on the CPU to pack");
  }
  if (w.codes.size(1) % 32 != 0 || w.group_size % 32 != 0) {
    return NewLut4DequantLinear(w, c10::Device(c10::kCPU));
  }
  std::unique_ptr<PackedWeight> out;
  absl::Status s = common::TorchCall("lut4 pack", [&]() -> absl::Status {
    // bench/kernels_bench (bench/RESULTS.md): our integer kernel beats LibTorch's int4 kernel
    // for every activation dtype on AVX2; without AVX2, LibTorch's is the faster for 16-bit
    // activations. Tables other than 0..15 (NF4/FP4) only run on ours.
    const bool half = w.compute_dtype == at::kBFloat16 || w.compute_dtype == at::kHalf;
    const bool aten =
        options.kernel == CpuKernel::kAten ||
        (options.kernel == CpuKernel::kAuto && !HasAvx2Fma() && half && AtenInt4Fits(w));
    if (aten) {
      if (!AtenInt4Fits(w)) {
        return absl::InvalidArgumentError(
            "aten_weight_int4pack_mm needs an affine table, no permutation, group 32..256");
      }
      out = std::make_unique<Lut4AtenInt4>(w);
      return absl::OkStatus();
    }
    CpuKernel level = CpuKernel::kScalar;
    if (options.kernel != CpuKernel::kScalar && HasAvx2Fma()) level = CpuKernel::kAvx2;
    const bool avx512_wins = Lut4Avx512Wins(Q16TableScale(w.lut) == 1.f, w.group_size);
    if (HasAvx2Fma() && HasAvx512Vnni() &&
        (options.kernel == CpuKernel::kAvx512 ||
         (options.kernel == CpuKernel::kAuto && avx512_wins))) {
      level = CpuKernel::kAvx512;
    }
    // Int8 activations where asked for and the chunk layout fits them; they pay only with
    // VNNI (the scalar twin is for tests and CPUs without it, where kAuto keeps q16).
    const bool q8 = w.activation_bits == 8 && w.group_size % kQ8Block == 0 &&
                    (options.kernel != CpuKernel::kAuto || HasAvx512Vnni());
    if (q8 && level != CpuKernel::kScalar && HasAvx2Fma() && HasAvx512Vnni()) {
      level = CpuKernel::kAvx512;
    } else if (q8) {
      level = CpuKernel::kScalar;
    }
    out = std::make_unique<Lut4Cpu>(w, level, q8, options.max_gemv_rows);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

}  // namespace quantserve::quant::kernels::internal
