#pragma once
// Internal: the CPU kernels behind PackLut4 / PackInt8Rowwise, on raw pointers.
//
// The *Avx2 functions live in cpu_kernels_avx2.cc, the only file compiled with -mavx2 -mfma;
// it includes no ATen header (an inline ATen function compiled for AVX2 could be picked by the
// linker for every caller), so callers must check HasAvx2Fma() before calling them. The
// scalar twins are portable and compute the same sums in the same order per group.
//
// Packed 4-bit layout ("lut4 chunk layout"): for each output row n, for each chunk c of 32
// input columns, 16 bytes where byte j holds code[n, 32c + j] in its low nibble and
// code[n, 32c + 16 + j] in its high nibble. Row n starts at packed + n * K / 2.

#include <cstdint>

namespace quantserve::quant::kernels::internal {

// A 4-bit weight in the chunk layout. Requires K % 32 == 0 and group_size % 32 == 0.
struct Lut4Layout {
  const uint8_t* packed = nullptr;  // [N, K / 2]
  const float* scale = nullptr;     // [N, K / group_size]
  const float* offset = nullptr;    // [N, K / group_size] or null (no offset)
  const float* lut = nullptr;       // [16]
  bool affine = false;              // lut[i] == i: codes convert to float directly
  int64_t k = 0;
  int64_t group_size = 0;
};

// y[m, n] (n in [n0, n1), m < rows) = sum_k x[m, k] * w[n, k], x row stride ldx, y row
// stride ldy. xsum[m, g] is the sum of x[m, group g] (used only with an offset).
void Lut4GemvAvx2(const Lut4Layout& w, const float* x, int64_t ldx, const float* xsum,
                  int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1);
void Lut4GemvScalar(const Lut4Layout& w, const float* x, int64_t ldx, const float* xsum,
                    int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1);
// Writes the float weight rows [n0, n1) to out (row stride K).
void Lut4DequantAvx2(const Lut4Layout& w, int64_t n0, int64_t n1, float* out);
void Lut4DequantScalar(const Lut4Layout& w, int64_t n0, int64_t n1, float* out);

// Int8 rowwise: y[m, n] = scale[n] * sum_k x[m, k] * codes[n, k].
void Int8GemvAvx2(const int8_t* codes, const float* scale, int64_t k, const float* x, int64_t ldx,
                  int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1);
void Int8GemvScalar(const int8_t* codes, const float* scale, int64_t k, const float* x,
                    int64_t ldx, int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1);

// True when the CPU runs AVX2 and FMA (cached).
bool HasAvx2Fma();

}  // namespace quantserve::quant::kernels::internal
