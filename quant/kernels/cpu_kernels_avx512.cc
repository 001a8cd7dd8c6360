// AVX-512 (F, BW, VNNI, BF16) kernels. Like cpu_kernels_avx2.cc, this is the only file built with its
// flags: it includes no ATen header, and its functions run only after HasNativeBf16() / HasAvx512Vnni() said yes.
// GCC 12's AVX-512 headers build undefined vectors as `__m256 __Y = __Y;`, which -Wuninitialized
// reports wherever such an intrinsic inlines (a known false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cstdint>

#include "quant/kernels/cpu_kernels.h"

namespace quantserve::quant::kernels::internal {
namespace {

// Weight rows per register block: kNb weight rows x R activation rows of 16-float accumulators
// (R <= 4: 16 accumulators, 4 inputs and one weight vector in the 32 registers).
constexpr int kNb = 4;
// Weight rows per cache block: every activation row block reads them from L1/L2, not memory.
constexpr int64_t kCacheRows = 16;

inline __m512bh LoadBf16(const uint16_t* p) {
  return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p));
}
inline __m512bh LoadBf16(const uint16_t* p, __mmask32 mask) {
  return reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, p));
}

// Sum of the 16 lanes.
inline float Hsum(__m512 v) {
  const __m512 folded = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));  // swap halves
  const __m256 a = _mm512_castps512_ps256(folded);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// NB weight rows from n against R activation rows. Per (row, weight row) the order of the sum is
// fixed: 32-column steps, the masked tail, then the 16 lanes reduced.
template <int NB, int R>
inline void Bf16Block(const uint16_t* w, int64_t ldw, int64_t k, const uint16_t* x, int64_t ldx,
                      float* y, int64_t ldy, int64_t n) {
  __m512 acc[NB][R];
  for (int j = 0; j < NB; ++j) {
    for (int r = 0; r < R; ++r) acc[j][r] = _mm512_setzero_ps();
  }
  const int64_t full = k / 32 * 32;
  for (int64_t kk = 0; kk < full; kk += 32) {
    __m512bh xv[R];
    for (int r = 0; r < R; ++r) xv[r] = LoadBf16(x + r * ldx + kk);
    for (int j = 0; j < NB; ++j) {
      const __m512bh wv = LoadBf16(w + (n + j) * ldw + kk);
      for (int r = 0; r < R; ++r) acc[j][r] = _mm512_dpbf16_ps(acc[j][r], xv[r], wv);
    }
  }
  if (full < k) {
    const __mmask32 mask = static_cast<__mmask32>((uint64_t{1} << (k - full)) - 1);
    __m512bh xv[R];
    for (int r = 0; r < R; ++r) xv[r] = LoadBf16(x + r * ldx + full, mask);
    for (int j = 0; j < NB; ++j) {
      const __m512bh wv = LoadBf16(w + (n + j) * ldw + full, mask);
      for (int r = 0; r < R; ++r) acc[j][r] = _mm512_dpbf16_ps(acc[j][r], xv[r], wv);
    }
  }
  for (int j = 0; j < NB; ++j) {
    for (int r = 0; r < R; ++r) y[r * ldy + n + j] = Hsum(acc[j][r]);
  }
}

template <int R>
void Bf16Rows(const uint16_t* w, int64_t ldw, int64_t k, const uint16_t* x, int64_t ldx,
              float* y, int64_t ldy, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + kNb <= n1; n += kNb) Bf16Block<kNb, R>(w, ldw, k, x, ldx, y, ldy, n);
  for (; n < n1; ++n) Bf16Block<1, R>(w, ldw, k, x, ldx, y, ldy, n);
}

}  // namespace

void Bf16GemvAvx512(const uint16_t* w, int64_t ldw, int64_t k, const uint16_t* x, int64_t ldx,
                    int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  for (int64_t c0 = n0; c0 < n1; c0 += kCacheRows) {
    const int64_t c1 = std::min(n1, c0 + kCacheRows);
    for (int64_t m = 0; m < rows; m += 4) {
      const uint16_t* xm = x + m * ldx;
      float* ym = y + m * ldy;
      switch (std::min<int64_t>(4, rows - m)) {
        case 1: Bf16Rows<1>(w, ldw, k, xm, ldx, ym, ldy, c0, c1); break;
        case 2: Bf16Rows<2>(w, ldw, k, xm, ldx, ym, ldy, c0, c1); break;
        case 3: Bf16Rows<3>(w, ldw, k, xm, ldx, ym, ldy, c0, c1); break;
        default: Bf16Rows<4>(w, ldw, k, xm, ldx, ym, ldy, c0, c1); break;
      }
    }
  }
}

namespace {

// How far ahead of the current pair of chunks the weight stream is prefetched.
constexpr int64_t kPrefetch512 = 2048;

// One chunk pair of codes; the odd last chunk is loaded alone (the next 32 bytes may lie past
// the buffer), its partner zero.
inline __m512i LoadPair(const uint8_t* p, bool full) {
  return full ? _mm512_loadu_si512(p)
              : _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

inline float ScaleOfBlock(const Lut4Layout& w, const float* scale, int64_t block, int64_t groups) {
  // Padding blocks past K have d = 0; their group index is clamped to stay in bounds.
  return scale[std::min(block * kQ16Block / w.group_size, groups - 1)];
}

// R activation rows against weight rows [n0, n1); per row the arithmetic does not depend on R.
// kSame128: group_size % 128 == 0, so the four blocks of a chunk pair share one scale.
template <bool kAffine, bool kSame128, int R>
void Lut4Q16Rows512(const Lut4Layout& w, const Q16PairRows& x, const float* xg, float* y,
                    int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t kp = RoundUp(w.k, kLut4Chunk);
  const int64_t pairs = kp / kLut4Pair;   // full pairs of chunks
  const bool tail = (kp / kLut4Chunk) % 2 != 0;
  const int64_t groups = w.k / w.group_size;
  const __m512i mask = _mm512_set1_epi16(0x0F);
  // Tables: the low and high bytes of the 16 int16 entries, for byte lookups (vpshufb; vpermw
  // on words is several times slower on Zen 4).
  const __m512i nibbles = _mm512_set1_epi8(0x0F);
  constexpr __mmask64 kOddBytes = 0xAAAAAAAAAAAAAAAAull;
  __m512i table_lo = _mm512_setzero_si512(), table_hi = _mm512_setzero_si512();
  if constexpr (!kAffine) {
    const Lut4TableBytes t(w.table);
    table_lo = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(t.lo)));
    table_hi = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(t.hi)));
  }
  const __m512i kHalves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i kBlocks02 = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i kBlocks13 = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.packed + n * (kp / 2);
    const float* scale = w.scale + n * groups;
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t c = 0; c < pairs + (tail ? 1 : 0); ++c) {
      const uint8_t* p = row + c * (kLut4Pair / 2);
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch512), _MM_HINT_T0);
      const __m512i v = LoadPair(p, c < pairs);
      // cv[i]: word j holds the code (affine) or table value at bits 4i..4i+3 of word j.
      __m512i cv[4];
      if constexpr (kAffine) {
        cv[0] = _mm512_and_si512(v, mask);
        cv[1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
        cv[2] = _mm512_and_si512(_mm512_srli_epi16(v, 8), mask);
        cv[3] = _mm512_srli_epi16(v, 12);
      } else {
        // Bytes of word j: a = (bits 0-3, bits 8-11), b = (bits 4-7, bits 12-15); each
        // nibble looked up in both byte tables, then the even bytes' values and the odd
        // bytes' values reassembled into words.
        const __m512i a = _mm512_and_si512(v, nibbles);
        const __m512i b = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibbles);
        const __m512i a_lo = _mm512_shuffle_epi8(table_lo, a);
        const __m512i a_hi = _mm512_shuffle_epi8(table_hi, a);
        const __m512i b_lo = _mm512_shuffle_epi8(table_lo, b);
        const __m512i b_hi = _mm512_shuffle_epi8(table_hi, b);
        cv[0] = _mm512_mask_blend_epi8(kOddBytes, a_lo, _mm512_slli_epi16(a_hi, 8));
        cv[1] = _mm512_mask_blend_epi8(kOddBytes, b_lo, _mm512_slli_epi16(b_hi, 8));
        cv[2] = _mm512_mask_blend_epi8(kOddBytes, _mm512_srli_epi16(a_lo, 8), a_hi);
        cv[3] = _mm512_mask_blend_epi8(kOddBytes, _mm512_srli_epi16(b_lo, 8), b_hi);
      }
      // Lanes 0-7 of the A sums are block 4c, lanes 8-15 block 4c+2; B: 4c+1 and 4c+3.
      __m512 sa, sb;
      if constexpr (kSame128) {
        sa = sb = _mm512_set1_ps(ScaleOfBlock(w, scale, 4 * c, groups));
      } else if (w.group_size == kLut4Chunk && 2 * c + 1 < groups) {
        // Groups of 64: chunk 2c's scale in lanes 0-7, chunk 2c+1's in lanes 8-15.
        const __m512 two = _mm512_castps128_ps512(
            _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(scale + 2 * c))));
        sa = sb = _mm512_permutexvar_ps(kHalves, two);
      } else if (w.group_size == kQ16Block && 4 * c + 3 < groups) {
        // Groups of 32: blocks 4c, 4c+2 for the A sums; 4c+1, 4c+3 for B.
        const __m512 four = _mm512_castps128_ps512(_mm_loadu_ps(scale + 4 * c));
        sa = _mm512_permutexvar_ps(kBlocks02, four);
        sb = _mm512_permutexvar_ps(kBlocks13, four);
      } else {
        sa = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(ScaleOfBlock(w, scale, 4 * c, groups)),
                                  _mm512_set1_ps(ScaleOfBlock(w, scale, 4 * c + 2, groups)));
        sb = _mm512_mask_blend_ps(0xFF00,
                                  _mm512_set1_ps(ScaleOfBlock(w, scale, 4 * c + 1, groups)),
                                  _mm512_set1_ps(ScaleOfBlock(w, scale, 4 * c + 3, groups)));
      }
      for (int r = 0; r < R; ++r) {
        const int16_t* q = x.q + r * x.kp2 + c * kLut4Pair;
        const float* dv = x.dv + r * (x.kp2 / 4) + c * 32;
        __m512i a = _mm512_dpwssd_epi32(_mm512_setzero_si512(), cv[0], _mm512_loadu_si512(q));
        a = _mm512_dpwssd_epi32(a, cv[1], _mm512_loadu_si512(q + 32));
        __m512i b = _mm512_dpwssd_epi32(_mm512_setzero_si512(), cv[2], _mm512_loadu_si512(q + 64));
        b = _mm512_dpwssd_epi32(b, cv[3], _mm512_loadu_si512(q + 96));
        const __m512 fa = _mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_loadu_ps(dv));
        const __m512 fb = _mm512_mul_ps(_mm512_cvtepi32_ps(b), _mm512_loadu_ps(dv + 16));
        if constexpr (kSame128) {
          acc[r] = _mm512_fmadd_ps(_mm512_add_ps(fa, fb), sa, acc[r]);
        } else {
          acc[r] = _mm512_fmadd_ps(fb, sb, _mm512_fmadd_ps(fa, sa, acc[r]));
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      float sum = Hsum(acc[r]);
      if (w.offset != nullptr) {  // + sum_g offset[n, g] * (sum of x over group g)
        const float* o = w.offset + n * groups;
        const float* g = xg + r * groups;
        for (int64_t i = 0; i < groups; ++i) sum += o[i] * g[i];
      }
      y[r * ldy + n] = sum;
    }
  }
}

// As Lut4Q16All (cpu_kernels_avx2.cc): blocks of output rows stay in cache across the groups
// of 4 input rows.
template <bool kAffine, bool kSame128>
void Lut4Q16All512(const Lut4Layout& w, const Q16PairRows& x, const float* xg, int64_t rows,
                   float* y, int64_t ldy, int64_t n0, int64_t n1) {
  constexpr int64_t kRowBlock = 64;
  const int64_t groups = w.k / w.group_size;
  const int64_t block = rows > 4 ? kRowBlock : n1 - n0;
  for (int64_t b0 = n0; b0 < n1; b0 += block) {
    const int64_t b1 = std::min(n1, b0 + block);
    for (int64_t m = 0; m < rows; m += 4) {
      Q16PairRows xm = x;
      xm.q += m * x.kp2;
      xm.dv += m * (x.kp2 / 4);
      const float* xgm = xg != nullptr ? xg + m * groups : nullptr;
      float* ym = y + m * ldy;
      switch (std::min<int64_t>(4, rows - m)) {
        case 1: Lut4Q16Rows512<kAffine, kSame128, 1>(w, xm, xgm, ym, ldy, b0, b1); break;
        case 2: Lut4Q16Rows512<kAffine, kSame128, 2>(w, xm, xgm, ym, ldy, b0, b1); break;
        case 3: Lut4Q16Rows512<kAffine, kSame128, 3>(w, xm, xgm, ym, ldy, b0, b1); break;
        default: Lut4Q16Rows512<kAffine, kSame128, 4>(w, xm, xgm, ym, ldy, b0, b1); break;
      }
    }
  }
}

}  // namespace

void Lut4Q16Avx512(const Lut4Layout& w, const Q16PairRows& x, const float* xg, int64_t rows,
                   float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const bool same128 = w.group_size % kLut4Pair == 0;
  if (w.affine) {
    if (same128) {
      Lut4Q16All512<true, true>(w, x, xg, rows, y, ldy, n0, n1);
    } else {
      Lut4Q16All512<true, false>(w, x, xg, rows, y, ldy, n0, n1);
    }
  } else if (same128) {
    Lut4Q16All512<false, true>(w, x, xg, rows, y, ldy, n0, n1);
  } else {
    Lut4Q16All512<false, false>(w, x, xg, rows, y, ldy, n0, n1);
  }
}

namespace {

// R activation rows (q8) against weight rows [n0, n1). Per pair of chunks: one load of 128
// codes, two masks, for tables two vpshufb, then per row two vpdpbusd and one scaled float add.
// kSame128: group_size % 128 == 0 (one scale per pair); else one scale per chunk.
template <bool kTable, bool kSame128, int R>
void Lut4Q8Rows512(const Lut4Layout& w, const uint8_t* t8, float rescale, const Q8PairRows& x,
                   const float* xg, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t kp = RoundUp(w.k, kLut4Chunk);
  const int64_t pairs = kp / kLut4Pair;
  const bool tail = (kp / kLut4Chunk) % 2 != 0;
  const int64_t groups = w.k / w.group_size;
  const __m512i mask = _mm512_set1_epi8(0x0F);
  __m512i table = _mm512_setzero_si512();
  if constexpr (kTable) {
    table = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t8)));
  }
  const __m512i kHalves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.packed + n * (kp / 2);
    const float* scale = w.scale + n * groups;
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t c = 0; c < pairs + (tail ? 1 : 0); ++c) {
      const uint8_t* p = row + c * (kLut4Pair / 2);
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch512), _MM_HINT_T0);
      const __m512i v = LoadPair(p, c < pairs);
      __m512i lo = _mm512_and_si512(v, mask);
      __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
      if constexpr (kTable) {
        lo = _mm512_shuffle_epi8(table, lo);
        hi = _mm512_shuffle_epi8(table, hi);
      }
      __m512 s;
      if constexpr (kSame128) {
        s = _mm512_set1_ps(scale[std::min(2 * c * kLut4Chunk / w.group_size, groups - 1)]);
      } else if (w.group_size == kLut4Chunk && 2 * c + 1 < groups) {
        const __m512 two = _mm512_castps128_ps512(
            _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(scale + 2 * c))));
        s = _mm512_permutexvar_ps(kHalves, two);
      } else {  // chunk 2c in lanes 0-7, 2c + 1 in 8-15 (past K: activations zero, any scale)
        const int64_t ga = std::min(2 * c * kLut4Chunk / w.group_size, groups - 1);
        const int64_t gb = std::min((2 * c + 1) * kLut4Chunk / w.group_size, groups - 1);
        s = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(scale[ga]), _mm512_set1_ps(scale[gb]));
      }
      for (int r = 0; r < R; ++r) {
        const int8_t* q = x.q + r * x.kp2 + c * kLut4Pair;
        const float* dv = x.dv + r * (x.kp2 / 8) + c * 16;
        __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(q));
        a = _mm512_dpbusd_epi32(a, hi, _mm512_loadu_si512(q + 64));
        const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_loadu_ps(dv));
        acc[r] = _mm512_fmadd_ps(f, s, acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      float sum = Hsum(acc[r]);
      const float* g = xg != nullptr ? xg + r * groups : nullptr;
      if constexpr (kTable) {  // the +128 of every table entry met the group sums
        float shift = 0.f;
        for (int64_t i = 0; i < groups; ++i) shift += scale[i] * g[i];
        sum = (sum - 128.f * shift) * rescale;
      }
      if (w.offset != nullptr) {
        const float* o = w.offset + n * groups;
        for (int64_t i = 0; i < groups; ++i) sum += o[i] * g[i];
      }
      y[r * ldy + n] = sum;
    }
  }
}

template <bool kTable, bool kSame128>
void Lut4Q8All512(const Lut4Layout& w, const uint8_t* t8, float rescale, const Q8PairRows& x,
                  const float* xg, int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  constexpr int64_t kRowBlock = 64;
  const int64_t groups = w.k / w.group_size;
  const int64_t block = rows > 4 ? kRowBlock : n1 - n0;
  for (int64_t b0 = n0; b0 < n1; b0 += block) {
    const int64_t b1 = std::min(n1, b0 + block);
    for (int64_t m = 0; m < rows; m += 4) {
      Q8PairRows xm = x;
      xm.q += m * x.kp2;
      xm.dv += m * (x.kp2 / 8);
      const float* xgm = xg != nullptr ? xg + m * groups : nullptr;
      float* ym = y + m * ldy;
      switch (std::min<int64_t>(4, rows - m)) {
        case 1: Lut4Q8Rows512<kTable, kSame128, 1>(w, t8, rescale, xm, xgm, ym, ldy, b0, b1); break;
        case 2: Lut4Q8Rows512<kTable, kSame128, 2>(w, t8, rescale, xm, xgm, ym, ldy, b0, b1); break;
        case 3: Lut4Q8Rows512<kTable, kSame128, 3>(w, t8, rescale, xm, xgm, ym, ldy, b0, b1); break;
        default: Lut4Q8Rows512<kTable, kSame128, 4>(w, t8, rescale, xm, xgm, ym, ldy, b0, b1); break;
      }
    }
  }
}

}  // namespace

void Lut4Q8Avx512(const Lut4Layout& w, const uint8_t* t8, float rescale, const Q8PairRows& x,
                  const float* xg, int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const bool same128 = w.group_size % kLut4Pair == 0;
  if (t8 == nullptr) {
    if (same128) {
      Lut4Q8All512<false, true>(w, t8, rescale, x, xg, rows, y, ldy, n0, n1);
    } else {
      Lut4Q8All512<false, false>(w, t8, rescale, x, xg, rows, y, ldy, n0, n1);
    }
  } else if (same128) {
    Lut4Q8All512<true, true>(w, t8, rescale, x, xg, rows, y, ldy, n0, n1);
  } else {
    Lut4Q8All512<true, false>(w, t8, rescale, x, xg, rows, y, ldy, n0, n1);
  }
}

}  // namespace quantserve::quant::kernels::internal
