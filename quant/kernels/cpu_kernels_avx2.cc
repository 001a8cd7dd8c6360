// AVX2 + FMA kernels. This is the only file built with -mavx2 -mfma: it must not include ATen
// (or any header with inline functions shared with other files), and its functions run only
// after HasAvx2Fma() said yes.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <cstring>

#include "quant/kernels/cpu_kernels.h"

namespace quantserve::quant::kernels::internal {
namespace {

inline float Hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int32_t HsumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

inline float Hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Rounds 16 floats (times inv) to int16 in column order; adds the int32 codes to *sum.
inline __m256i Round16(const float* x, __m256 inv, __m256i* sum) {
  const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), inv));
  const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), inv));
  *sum = _mm256_add_epi32(*sum, _mm256_add_epi32(a, b));
  // packs interleaves the 128-bit lanes; the permute restores column order.
  return _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
}

// The four vectors of 16 int16 codes (columns 16p..16p+15) of one 64-column chunk.
inline void DecodeCodes(const uint8_t* p, __m256i c[4]) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i mask = _mm256_set1_epi16(0x0F);
  c[0] = _mm256_and_si256(v, mask);
  c[1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
  c[2] = _mm256_and_si256(_mm256_srli_epi16(v, 8), mask);
  c[3] = _mm256_srli_epi16(v, 12);
}

// Replaces two vectors of int16 codes by their int16 table values: the codes are packed to
// bytes, both bytes of each value looked up with pshufb, and interleaved back in order.
inline void LookupPair(__m256i* a, __m256i* b, __m256i table_lo, __m256i table_hi) {
  const __m256i idx = _mm256_packus_epi16(*a, *b);  // lane h: a[8h..8h+7], b[8h..8h+7]
  const __m256i lo = _mm256_shuffle_epi8(table_lo, idx);
  const __m256i hi = _mm256_shuffle_epi8(table_hi, idx);
  *a = _mm256_unpacklo_epi8(lo, hi);
  *b = _mm256_unpackhi_epi8(lo, hi);
}

inline __m256i LoadQ(const int16_t* q) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
}

// How far ahead of the current chunk the weight stream is prefetched.
constexpr int64_t kPrefetchBytes = 2048;

// R activation rows against weight rows [n0, n1). Each row's arithmetic is the same whatever
// R is, so a row's result does not depend on the batch it runs in. kSameGroup: both 32-column
// blocks of every chunk share a weight group (group_size % 64 == 0), so the block sums are
// combined before the group scale; otherwise each block gets d * scale of its own group.
template <bool kAffine, bool kSameGroup, int R>
void Lut4Q16Rows(const Lut4Layout& w, const Q16Rows& x, const float* xg, float* y, int64_t ldy,
                 int64_t n0, int64_t n1) {
  const int64_t chunks = x.kp / kLut4Chunk;
  const int64_t nb = x.kp / kQ16Block;
  const int64_t groups = w.k / w.group_size;
  __m256i table_lo = _mm256_setzero_si256(), table_hi = _mm256_setzero_si256();
  if constexpr (!kAffine) {
    const Lut4TableBytes t(w.table);
    table_lo = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(t.lo)));
    table_hi = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(t.hi)));
  }
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.packed + n * (x.kp / 2);
    const float* scale = w.scale + n * groups;
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t c = 0; c < chunks; ++c) {
      // Ahead of the hardware prefetcher, which stops at page boundaries: the rows of one
      // task are contiguous, so this runs into the next row too.
      _mm_prefetch(reinterpret_cast<const char*>(row + c * (kLut4Chunk / 2) + kPrefetchBytes),
                   _MM_HINT_T0);
      __m256i cv[4];
      DecodeCodes(row + c * (kLut4Chunk / 2), cv);
      if constexpr (!kAffine) {
        LookupPair(&cv[0], &cv[1], table_lo, table_hi);
        LookupPair(&cv[2], &cv[3], table_lo, table_hi);
      }
      // Padding blocks past K have d = 0; their group index is clamped to stay in bounds.
      const float s_a = scale[std::min(c * kLut4Chunk / w.group_size, groups - 1)];
      const float s_b =
          kSameGroup ? s_a
                     : scale[std::min((c * kLut4Chunk + kQ16Block) / w.group_size, groups - 1)];
      for (int r = 0; r < R; ++r) {
        const int16_t* q = x.q + r * x.kp + c * kLut4Chunk;
        const float* d = x.d + r * nb + 2 * c;
        const __m256i pa = _mm256_add_epi32(_mm256_madd_epi16(cv[0], LoadQ(q)),
                                            _mm256_madd_epi16(cv[1], LoadQ(q + 16)));
        const __m256i pb = _mm256_add_epi32(_mm256_madd_epi16(cv[2], LoadQ(q + 32)),
                                            _mm256_madd_epi16(cv[3], LoadQ(q + 48)));
        if constexpr (kSameGroup) {
          __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(pa), _mm256_broadcast_ss(d));
          t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pb), _mm256_broadcast_ss(d + 1), t);
          acc[r] = _mm256_fmadd_ps(t, _mm256_set1_ps(s_a), acc[r]);
        } else {
          __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(pa), _mm256_set1_ps(d[0] * s_a));
          t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pb), _mm256_set1_ps(d[1] * s_b), t);
          acc[r] = _mm256_add_ps(acc[r], t);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      if (w.offset != nullptr) {  // + sum_g offset[n, g] * (sum of x over group g)
        const float* o = w.offset + n * groups;
        const float* g = xg + r * groups;
        int64_t i = 0;
        for (; i + 8 <= groups; i += 8) {
          acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(o + i), _mm256_loadu_ps(g + i), acc[r]);
        }
        float tail = 0.f;
        for (; i < groups; ++i) tail += o[i] * g[i];
        y[r * ldy + n] = Hsum(acc[r]) + tail;
      } else {
        y[r * ldy + n] = Hsum(acc[r]);
      }
    }
  }
}

// Output rows per cache block when more than 4 input rows share the weights: the block's codes
// stay in L2 while every group of 4 input rows streams over them, so a batched decode step
// reads the weights from memory once, not once per 4 rows.
constexpr int64_t kRowBlock = 64;

template <bool kAffine, bool kSameGroup>
void Lut4Q16All(const Lut4Layout& w, const Q16Rows& x, const float* xg, int64_t rows, float* y,
                int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t groups = w.k / w.group_size;
  const int64_t block = rows > 4 ? kRowBlock : n1 - n0;
  for (int64_t b0 = n0; b0 < n1; b0 += block) {
    const int64_t b1 = std::min(n1, b0 + block);
    for (int64_t m = 0; m < rows; m += 4) {
      Q16Rows xm = x;
      xm.q += m * x.kp;
      xm.d += m * (x.kp / kQ16Block);
      const float* xgm = xg != nullptr ? xg + m * groups : nullptr;
      float* ym = y + m * ldy;
      switch (std::min<int64_t>(4, rows - m)) {
        case 4:
          Lut4Q16Rows<kAffine, kSameGroup, 4>(w, xm, xgm, ym, ldy, b0, b1);
          break;
        case 3:
          Lut4Q16Rows<kAffine, kSameGroup, 3>(w, xm, xgm, ym, ldy, b0, b1);
          break;
        case 2:
          Lut4Q16Rows<kAffine, kSameGroup, 2>(w, xm, xgm, ym, ldy, b0, b1);
          break;
        default:
          Lut4Q16Rows<kAffine, kSameGroup, 1>(w, xm, xgm, ym, ldy, b0, b1);
          break;
      }
    }
  }
}

// One table lookup of 8 codes (int32): vpermps uses the low 3 bits, bit 3 picks the half.
inline __m256 LookupFloat(__m256i idx, __m256 lut_lo, __m256 lut_hi) {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut_lo, idx),
                          _mm256_permutevar8x32_ps(lut_hi, idx),
                          _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

template <bool kAffine>
void Lut4DequantRows(const Lut4Layout& w, int64_t n0, int64_t n1, float* out) {
  const int64_t kp = RoundUp(w.k, kLut4Chunk);
  const int64_t groups = w.k / w.group_size;
  const __m256 lut_lo = _mm256_loadu_ps(w.lut);
  const __m256 lut_hi = _mm256_loadu_ps(w.lut + 8);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.packed + n * (kp / 2);
    float* o = out + (n - n0) * w.k;
    for (int64_t c = 0; c < kp / kLut4Chunk; ++c) {
      __m256i cv[4];
      DecodeCodes(row + c * (kLut4Chunk / 2), cv);
      for (int p = 0; p < 4; ++p) {
        const int64_t k0 = c * kLut4Chunk + 16 * p;
        if (k0 >= w.k) break;
        const int64_t g = k0 / w.group_size;
        const __m256 s = _mm256_set1_ps(w.scale[n * groups + g]);
        const __m256 b = _mm256_set1_ps(w.offset != nullptr ? w.offset[n * groups + g] : 0.f);
        const __m256i half[2] = {_mm256_cvtepu16_epi32(_mm256_castsi256_si128(cv[p])),
                                 _mm256_cvtepu16_epi32(_mm256_extracti128_si256(cv[p], 1))};
        for (int h = 0; h < 2; ++h) {
          const __m256 v = kAffine ? _mm256_cvtepi32_ps(half[h])
                                   : LookupFloat(half[h], lut_lo, lut_hi);
          _mm256_storeu_ps(o + k0 + 8 * h, _mm256_fmadd_ps(v, s, b));
        }
      }
    }
  }
}

template <int R>
void Int8Q16Rows(const int8_t* codes, const float* scale, int64_t k, const Q16Rows& x, float* y,
                 int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t full = k / kQ16Block;
  const int64_t nb = x.kp / kQ16Block;
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* row = codes + n * k;
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    // Two blocks per iteration, combined before the accumulator: the FMA chain is half as long.
    int64_t b = 0;
    for (; b + 2 <= full; b += 2) {
      const int8_t* wb = row + b * kQ16Block;
      _mm_prefetch(reinterpret_cast<const char*>(wb + kPrefetchBytes), _MM_HINT_T0);
      __m256i w[4];
      for (int i = 0; i < 4; ++i) {
        w[i] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wb + 16 * i)));
      }
      for (int r = 0; r < R; ++r) {
        const int16_t* q = x.q + r * x.kp + b * kQ16Block;
        const float* d = x.d + r * nb + b;
        const __m256i p0 = _mm256_add_epi32(_mm256_madd_epi16(w[0], LoadQ(q)),
                                            _mm256_madd_epi16(w[1], LoadQ(q + 16)));
        const __m256i p1 = _mm256_add_epi32(_mm256_madd_epi16(w[2], LoadQ(q + 32)),
                                            _mm256_madd_epi16(w[3], LoadQ(q + 48)));
        __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(p0), _mm256_broadcast_ss(d));
        t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_broadcast_ss(d + 1), t);
        acc[r] = _mm256_add_ps(acc[r], t);
      }
    }
    for (; b < full; ++b) {
      const int8_t* wb = row + b * kQ16Block;
      const __m256i w0 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wb)));
      const __m256i w1 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wb + 16)));
      for (int r = 0; r < R; ++r) {
        const int16_t* q = x.q + r * x.kp + b * kQ16Block;
        const __m256i p = _mm256_add_epi32(_mm256_madd_epi16(w0, LoadQ(q)),
                                           _mm256_madd_epi16(w1, LoadQ(q + 16)));
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(x.d + r * nb + b),
                                 acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      float sum = Hsum(acc[r]);
      if (full * kQ16Block < k) {  // a last, partial block
        const int16_t* q = x.q + r * x.kp;
        int32_t t = 0;
        for (int64_t i = full * kQ16Block; i < k; ++i) t += row[i] * q[i];
        sum += static_cast<float>(t) * x.d[r * nb + full];
      }
      y[r * ldy + n] = sum * scale[n];
    }
  }
}

}  // namespace

void QuantizeQ16Avx2(const float* x, int64_t ldx, int64_t rows, int64_t k, int64_t kp,
                     int16_t* q, float* d, float* bsum) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const int64_t nb = kp / kQ16Block;
  alignas(32) float tail[kQ16Block];
  for (int64_t m = 0; m < rows; ++m) {
    const float* xr = x + m * ldx;
    int16_t* qr = q + m * kp;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t k0 = b * kQ16Block;
      const int64_t cols = std::clamp<int64_t>(k - k0, 0, kQ16Block);
      const float* src = xr + k0;
      if (cols < kQ16Block) {  // the last partial block, or padding: zeros past K
        std::memset(tail, 0, sizeof(tail));
        if (cols > 0) std::memcpy(tail, src, cols * sizeof(float));
        src = tail;
      }
      __m256 amax = _mm256_setzero_ps();
      for (int i = 0; i < 4; ++i) {
        amax = _mm256_max_ps(amax, _mm256_and_ps(_mm256_loadu_ps(src + 8 * i), abs_mask));
      }
      const float mx = Hmax(amax);
      const float inv = mx > 0.f ? 32767.f / mx : 0.f;
      const __m256 vinv = _mm256_set1_ps(inv);
      __m256i isum = _mm256_setzero_si256();
      const __m256i q0 = Round16(src, vinv, &isum);
      const __m256i q1 = Round16(src + 16, vinv, &isum);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qr + k0), q0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qr + k0 + 16), q1);
      const float scale = mx / 32767.f;
      d[m * nb + b] = scale;
      bsum[m * nb + b] = scale * static_cast<float>(HsumI32(isum));
    }
  }
}

void Lut4Q16Avx2(const Lut4Layout& w, const Q16Rows& x, const float* xg, int64_t rows, float* y,
                 int64_t ldy, int64_t n0, int64_t n1) {
  const bool same = w.group_size % kLut4Chunk == 0;
  if (w.affine) {
    if (same) {
      Lut4Q16All<true, true>(w, x, xg, rows, y, ldy, n0, n1);
    } else {
      Lut4Q16All<true, false>(w, x, xg, rows, y, ldy, n0, n1);
    }
  } else {
    if (same) {
      Lut4Q16All<false, true>(w, x, xg, rows, y, ldy, n0, n1);
    } else {
      Lut4Q16All<false, false>(w, x, xg, rows, y, ldy, n0, n1);
    }
  }
}

void Lut4DequantAvx2(const Lut4Layout& w, int64_t n0, int64_t n1, float* out) {
  if (w.affine) {
    Lut4DequantRows<true>(w, n0, n1, out);
  } else {
    Lut4DequantRows<false>(w, n0, n1, out);
  }
}

void Int8Q16Avx2(const int8_t* codes, const float* scale, int64_t k, const Q16Rows& x,
                 int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  // As Lut4Q16All: blocks of output rows stay in cache across the groups of 4 input rows.
  const int64_t block = rows > 4 ? kRowBlock / 2 : n1 - n0;
  for (int64_t b0 = n0; b0 < n1; b0 += block) {
    const int64_t b1 = std::min(n1, b0 + block);
    for (int64_t m = 0; m < rows; m += 4) {
      Q16Rows xm = x;
      xm.q += m * x.kp;
      xm.d += m * (x.kp / kQ16Block);
      float* ym = y + m * ldy;
      switch (std::min<int64_t>(4, rows - m)) {
        case 4:
          Int8Q16Rows<4>(codes, scale, k, xm, ym, ldy, b0, b1);
          break;
        case 3:
          Int8Q16Rows<3>(codes, scale, k, xm, ym, ldy, b0, b1);
          break;
        case 2:
          Int8Q16Rows<2>(codes, scale, k, xm, ym, ldy, b0, b1);
          break;
        default:
          Int8Q16Rows<1>(codes, scale, k, xm, ym, ldy, b0, b1);
          break;
      }
    }
  }
}

namespace {

// 16 bf16 values as two vectors of 8 floats (a bf16 is the top half of a float32).
inline void Bf16ToFloat(const uint16_t* p, __m256* lo, __m256* hi) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  *lo = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)), 16));
  *hi = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1)), 16));
}

inline float Bf16Value(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// NB weight rows from n against R activation rows (R <= 4: 8 accumulators and the weights in
// the 16 registers). Per (row, weight row) the order is fixed: 16-column steps, the lanes
// reduced, then the tail added in column order.
template <int NB, int R>
inline void Bf16BlockAvx2(const uint16_t* w, int64_t ldw, int64_t k, const float* x,
                          int64_t ldx, float* y, int64_t ldy, int64_t n) {
  __m256 acc[NB][R];
  for (int j = 0; j < NB; ++j) {
    for (int r = 0; r < R; ++r) acc[j][r] = _mm256_setzero_ps();
  }
  const int64_t full = k / 16 * 16;
  for (int64_t kk = 0; kk < full; kk += 16) {
    for (int j = 0; j < NB; ++j) {
      __m256 lo, hi;
      Bf16ToFloat(w + (n + j) * ldw + kk, &lo, &hi);
      for (int r = 0; r < R; ++r) {
        acc[j][r] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x + r * ldx + kk), acc[j][r]);
        acc[j][r] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + r * ldx + kk + 8), acc[j][r]);
      }
    }
  }
  for (int j = 0; j < NB; ++j) {
    const uint16_t* wr = w + (n + j) * ldw;
    for (int r = 0; r < R; ++r) {
      float sum = Hsum(acc[j][r]);
      for (int64_t i = full; i < k; ++i) sum += Bf16Value(wr[i]) * x[r * ldx + i];
      y[r * ldy + n + j] = sum;
    }
  }
}

template <int R>
void Bf16RowsAvx2(const uint16_t* w, int64_t ldw, int64_t k, const float* x, int64_t ldx,
                  float* y, int64_t ldy, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 2 <= n1; n += 2) Bf16BlockAvx2<2, R>(w, ldw, k, x, ldx, y, ldy, n);
  for (; n < n1; ++n) Bf16BlockAvx2<1, R>(w, ldw, k, x, ldx, y, ldy, n);
}

}  // namespace

void Bf16GemvAvx2(const uint16_t* w, int64_t ldw, int64_t k, const float* x, int64_t ldx,
                  int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  // Blocks of 16 weight rows stay in cache across the groups of 4 input rows.
  constexpr int64_t kCacheRows = 16;
  for (int64_t c0 = n0; c0 < n1; c0 += kCacheRows) {
    const int64_t c1 = std::min(n1, c0 + kCacheRows);
    for (int64_t m = 0; m < rows; m += 4) {
      const float* xm = x + m * ldx;
      float* ym = y + m * ldy;
      switch (std::min<int64_t>(4, rows - m)) {
        case 1: Bf16RowsAvx2<1>(w, ldw, k, xm, ldx, ym, ldy, c0, c1); break;
        case 2: Bf16RowsAvx2<2>(w, ldw, k, xm, ldx, ym, ldy, c0, c1); break;
        case 3: Bf16RowsAvx2<3>(w, ldw, k, xm, ldx, ym, ldy, c0, c1); break;
        default: Bf16RowsAvx2<4>(w, ldw, k, xm, ldx, ym, ldy, c0, c1); break;
      }
    }
  }
}

namespace {

// exp(x) for x <= 0, within 2 ulp of expf (Cephes' polynomial on x - n ln2); inputs below -87
// give exp(-87) ~ 1.6e-38 instead of denormals, which no probability sum can see.
inline __m256 ExpNonPositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// Rounds 8 floats to the nearest bf16 (ties to even), kept as floats.
inline __m256 RoundToBf16(__m256 x) {
  const __m256i b = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), lsb));
  return _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
}

// One cache row of d values (d % 8 == 0) as float32 into out.
template <bool kBf16>
inline void CacheRow(const void* base, int64_t offset, int64_t d, float* out) {
  if constexpr (kBf16) {
    const uint16_t* p = static_cast<const uint16_t*>(base) + offset;
    for (int64_t c = 0; c < d; c += 8) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + c));
      _mm256_storeu_ps(out + c, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16)));
    }
  } else {
    std::memcpy(out, static_cast<const float*>(base) + offset, d * sizeof(float));
  }
}

template <bool kBf16>
void DecodeAttentionT(const DecodeAttentionArgs& a, int64_t g0, int64_t g1) {
  const int64_t group = a.n_heads / a.n_kv;
  const int64_t len = a.hi - a.lo;
  const int64_t d = a.d;
  float* probs = a.scratch;         // [group, len]
  float* acc = probs + group * len;  // [group, d]
  float* row = acc + group * d;      // [d]
  float* sums = row + d;             // [group]
  for (int64_t g = g0; g < g1; ++g) {
    const float* q = a.q + g * group * d;
    const int64_t head = g * a.head_stride;
    // Scores: each key row is converted once and met by every query head of its group.
    for (int64_t j = 0; j < len; ++j) {
      CacheRow<kBf16>(a.k, head + (a.lo + j) * d, d, row);
      for (int64_t h = 0; h < group; ++h) {
        __m256 s = _mm256_setzero_ps();
        for (int64_t c = 0; c < d; c += 8) {
          s = _mm256_fmadd_ps(_mm256_loadu_ps(row + c), _mm256_loadu_ps(q + h * d + c), s);
        }
        probs[h * len + j] = Hsum(s) * a.scale;
      }
    }
    // Softmax numerators and their float32 sums; the numerators rounded to bf16 if asked.
    for (int64_t h = 0; h < group; ++h) {
      float* p = probs + h * len;
      __m256 vmax = _mm256_set1_ps(-INFINITY);
      int64_t j = 0;
      for (; j + 8 <= len; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(p + j));
      float max = Hmax(vmax);
      for (; j < len; ++j) max = std::max(max, p[j]);
      const __m256 vm = _mm256_set1_ps(max);
      __m256 vsum = _mm256_setzero_ps();
      for (j = 0; j + 8 <= len; j += 8) {
        const __m256 e = ExpNonPositive(_mm256_sub_ps(_mm256_loadu_ps(p + j), vm));
        vsum = _mm256_add_ps(vsum, e);
        _mm256_storeu_ps(p + j, a.round_probs ? RoundToBf16(e) : e);
      }
      float sum = Hsum(vsum);
      if (j < len) {
        // The tail through the same vector exp, padded with -inf's neighbour -87 (unused).
        alignas(32) float t[8];
        for (int64_t i = 0; i < 8; ++i) t[i] = j + i < len ? p[j + i] - max : -87.f;
        __m256 e = ExpNonPositive(_mm256_load_ps(t));
        const __m256 er = a.round_probs ? RoundToBf16(e) : e;
        alignas(32) float te[8], tr[8];
        _mm256_store_ps(te, e);
        _mm256_store_ps(tr, er);
        for (int64_t i = 0; j + i < len; ++i) {
          sum += te[i];
          p[j + i] = tr[i];
        }
      }
      sums[h] = sum;
    }
    // P.V: each value row converted once, accumulated into every head of the group.
    for (int64_t i = 0; i < group * d; ++i) acc[i] = 0.f;
    for (int64_t j = 0; j < len; ++j) {
      CacheRow<kBf16>(a.v, head + (a.lo + j) * d, d, row);
      for (int64_t h = 0; h < group; ++h) {
        const __m256 w = _mm256_set1_ps(probs[h * len + j]);
        float* o = acc + h * d;
        for (int64_t c = 0; c < d; c += 8) {
          _mm256_storeu_ps(o + c, _mm256_fmadd_ps(w, _mm256_loadu_ps(row + c),
                                                  _mm256_loadu_ps(o + c)));
        }
      }
    }
    for (int64_t h = 0; h < group; ++h) {
      const __m256 inv = _mm256_set1_ps(1.f / sums[h]);
      float* out = a.out + (g * group + h) * d;
      for (int64_t c = 0; c < d; c += 8) {
        _mm256_storeu_ps(out + c, _mm256_mul_ps(_mm256_loadu_ps(acc + h * d + c), inv));
      }
    }
  }
}

}  // namespace

void DecodeAttentionAvx2(const DecodeAttentionArgs& a, int64_t g0, int64_t g1) {
  if (a.bf16) {
    DecodeAttentionT<true>(a, g0, g1);
  } else {
    DecodeAttentionT<false>(a, g0, g1);
  }
}

}  // namespace quantserve::quant::kernels::internal
