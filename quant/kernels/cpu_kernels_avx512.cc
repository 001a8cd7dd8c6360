// AVX-512 (F, BW, BF16) kernels. Like cpu_kernels_avx2.cc, this is the only file built with its
// flags: it includes no ATen header, and its functions run only after HasNativeBf16() said yes.
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

}  // namespace quantserve::quant::kernels::internal
