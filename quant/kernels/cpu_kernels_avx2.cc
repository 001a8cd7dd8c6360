// AVX2 + FMA kernels. This is the only file built with -mavx2 -mfma: it must not include ATen
// (or any header with inline functions shared with other files), and its functions run only
// after HasAvx2Fma() said yes.
#include <immintrin.h>

#include <algorithm>

#include <cstdint>

#include "quant/kernels/cpu_kernels.h"

namespace quantserve::quant::kernels::internal {
namespace {

inline float Hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One table lookup of 8 codes: vpermps uses the low 3 bits, bit 3 picks the half.
inline __m256 Lookup(__m256i idx, __m256 lut_lo, __m256 lut_hi) {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut_lo, idx),
                          _mm256_permutevar8x32_ps(lut_hi, idx),
                          _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

// The 32 weights of one chunk (16 packed bytes), in column order: w[0] holds columns 0-7, ...
template <bool kAffine>
inline void Decode32(const uint8_t* p, __m256 lut_lo, __m256 lut_hi, __m256 w[4]) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(b, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
  const __m256i idx[4] = {_mm256_cvtepu8_epi32(lo), _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)),
                          _mm256_cvtepu8_epi32(hi), _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))};
  for (int i = 0; i < 4; ++i) {
    w[i] = kAffine ? _mm256_cvtepi32_ps(idx[i]) : Lookup(idx[i], lut_lo, lut_hi);
  }
}

// R rows of x against rows [n0, n1) of w. Each row keeps NA partial sums per group (FMA
// latency), folds them into a vector total with the group scale, and reduces once per row.
template <bool kAffine, int R>
void Lut4GemvRows(const Lut4Layout& w, const float* x, int64_t ldx, const float* xsum, float* y,
                  int64_t ldy, int64_t n0, int64_t n1) {
  constexpr int NA = R == 1 ? 4 : 2;
  const int64_t groups = w.k / w.group_size;
  const int64_t chunks = w.group_size / 32;
  const __m256 lut_lo = _mm256_loadu_ps(w.lut);
  const __m256 lut_hi = _mm256_loadu_ps(w.lut + 8);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.packed + n * (w.k / 2);
    const float* scale = w.scale + n * groups;
    const float* offset = w.offset != nullptr ? w.offset + n * groups : nullptr;
    __m256 total[R];
    float off_total[R];
    for (int r = 0; r < R; ++r) {
      total[r] = _mm256_setzero_ps();
      off_total[r] = 0.f;
    }
    for (int64_t g = 0; g < groups; ++g) {
      __m256 acc[R][NA];
      for (int r = 0; r < R; ++r) {
        for (int a = 0; a < NA; ++a) acc[r][a] = _mm256_setzero_ps();
      }
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t k0 = (g * chunks + c) * 32;
        __m256 wv[4];
        Decode32<kAffine>(row + k0 / 2, lut_lo, lut_hi, wv);
        for (int r = 0; r < R; ++r) {
          const float* xr = x + r * ldx + k0;
          for (int i = 0; i < 4; ++i) {
            acc[r][i % NA] = _mm256_fmadd_ps(wv[i], _mm256_loadu_ps(xr + 8 * i), acc[r][i % NA]);
          }
        }
      }
      const __m256 s = _mm256_set1_ps(scale[g]);
      for (int r = 0; r < R; ++r) {
        __m256 a = acc[r][0];
        for (int i = 1; i < NA; ++i) a = _mm256_add_ps(a, acc[r][i]);
        total[r] = _mm256_fmadd_ps(a, s, total[r]);
        if (offset != nullptr) off_total[r] += offset[g] * xsum[r * groups + g];
      }
    }
    for (int r = 0; r < R; ++r) y[r * ldy + n] = Hsum(total[r]) + off_total[r];
  }
}

// Output rows per cache block when more than 4 input rows share the weights: the block's codes
// (64 rows x K/2 bytes) stay in L2 while every group of 4 input rows streams over them, so a
// batched decode step reads the weights from memory once, not once per 4 rows.
constexpr int64_t kRowBlock = 64;

template <bool kAffine>
void Lut4GemvAll(const Lut4Layout& w, const float* x, int64_t ldx, const float* xsum,
                 int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t groups = w.k / w.group_size;
  const int64_t block = rows > 4 ? kRowBlock : n1 - n0;
  for (int64_t b0 = n0; b0 < n1; b0 += block) {
    const int64_t b1 = std::min(n1, b0 + block);
    int64_t m = 0;
    for (; m + 4 <= rows; m += 4) {
      Lut4GemvRows<kAffine, 4>(w, x + m * ldx, ldx, xsum + m * groups, y + m * ldy, ldy, b0, b1);
    }
    const float* xm = x + m * ldx;
    const float* sm = xsum + m * groups;
    float* ym = y + m * ldy;
    switch (rows - m) {
      case 3:
        Lut4GemvRows<kAffine, 3>(w, xm, ldx, sm, ym, ldy, b0, b1);
        break;
      case 2:
        Lut4GemvRows<kAffine, 2>(w, xm, ldx, sm, ym, ldy, b0, b1);
        break;
      case 1:
        Lut4GemvRows<kAffine, 1>(w, xm, ldx, sm, ym, ldy, b0, b1);
        break;
      default:
        break;
    }
  }
}

template <bool kAffine>
void Lut4DequantRows(const Lut4Layout& w, int64_t n0, int64_t n1, float* out) {
  const int64_t groups = w.k / w.group_size;
  const int64_t chunks = w.group_size / 32;
  const __m256 lut_lo = _mm256_loadu_ps(w.lut);
  const __m256 lut_hi = _mm256_loadu_ps(w.lut + 8);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.packed + n * (w.k / 2);
    float* o = out + (n - n0) * w.k;
    for (int64_t g = 0; g < groups; ++g) {
      const __m256 s = _mm256_set1_ps(w.scale[n * groups + g]);
      const __m256 b = _mm256_set1_ps(w.offset != nullptr ? w.offset[n * groups + g] : 0.f);
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t k0 = (g * chunks + c) * 32;
        __m256 wv[4];
        Decode32<kAffine>(row + k0 / 2, lut_lo, lut_hi, wv);
        for (int i = 0; i < 4; ++i) _mm256_storeu_ps(o + k0 + 8 * i, _mm256_fmadd_ps(wv[i], s, b));
      }
    }
  }
}

template <int R>
void Int8GemvRows(const int8_t* codes, const float* scale, int64_t k, const float* x, int64_t ldx,
                  float* y, int64_t ldy, int64_t n0, int64_t n1) {
  constexpr int NA = R == 1 ? 4 : 2;
  const int64_t k32 = k / 32 * 32;
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* row = codes + n * k;
    __m256 acc[R][NA];
    for (int r = 0; r < R; ++r) {
      for (int a = 0; a < NA; ++a) acc[r][a] = _mm256_setzero_ps();
    }
    for (int64_t k0 = 0; k0 < k32; k0 += 32) {
      __m256 wv[4];
      for (int i = 0; i < 4; ++i) {
        const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + k0 + 8 * i));
        wv[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
      }
      for (int r = 0; r < R; ++r) {
        const float* xr = x + r * ldx + k0;
        for (int i = 0; i < 4; ++i) {
          acc[r][i % NA] = _mm256_fmadd_ps(wv[i], _mm256_loadu_ps(xr + 8 * i), acc[r][i % NA]);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      __m256 a = acc[r][0];
      for (int i = 1; i < NA; ++i) a = _mm256_add_ps(a, acc[r][i]);
      float sum = Hsum(a);
      const float* xr = x + r * ldx;
      for (int64_t kk = k32; kk < k; ++kk) sum += xr[kk] * static_cast<float>(row[kk]);
      y[r * ldy + n] = sum * scale[n];
    }
  }
}

}  // namespace

void Lut4GemvAvx2(const Lut4Layout& w, const float* x, int64_t ldx, const float* xsum,
                  int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  if (w.affine) {
    Lut4GemvAll<true>(w, x, ldx, xsum, rows, y, ldy, n0, n1);
  } else {
    Lut4GemvAll<false>(w, x, ldx, xsum, rows, y, ldy, n0, n1);
  }
}

void Lut4DequantAvx2(const Lut4Layout& w, int64_t n0, int64_t n1, float* out) {
  if (w.affine) {
    Lut4DequantRows<true>(w, n0, n1, out);
  } else {
    Lut4DequantRows<false>(w, n0, n1, out);
  }
}

void Int8GemvAvx2(const int8_t* codes, const float* scale, int64_t k, const float* x, int64_t ldx,
                  int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  // As Lut4GemvAll: blocks of output rows stay in cache across the groups of 4 input rows.
  const int64_t block = rows > 4 ? kRowBlock / 2 : n1 - n0;
  for (int64_t b0 = n0; b0 < n1; b0 += block) {
    const int64_t b1 = std::min(n1, b0 + block);
    int64_t m = 0;
    for (; m + 4 <= rows; m += 4) {
      Int8GemvRows<4>(codes, scale, k, x + m * ldx, ldx, y + m * ldy, ldy, b0, b1);
    }
    const float* xm = x + m * ldx;
    float* ym = y + m * ldy;
    switch (rows - m) {
      case 3:
        Int8GemvRows<3>(codes, scale, k, xm, ldx, ym, ldy, b0, b1);
        break;
      case 2:
        Int8GemvRows<2>(codes, scale, k, xm, ldx, ym, ldy, b0, b1);
        break;
      case 1:
        Int8GemvRows<1>(codes, scale, k, xm, ldx, ym, ldy, b0, b1);
        break;
      default:
        break;
    }
  }
}

}  // namespace quantserve::quant::kernels::internal
