#pragma once
// Internal: the CPU kernels behind PackLut4 / PackInt8Rowwise, on raw pointers.
//
// The kernels multiply integers, not floats. Each matmul input row is quantized once to int16
// per block of 32 columns ("q16": x ~= d[b] * q[k], |q| <= 32767, rounded to nearest even),
// and the weights stay in their integer codes: 16 products per vpmaddwd instead of 8 per FMA,
// and no code is ever turned into a float. The int32 block sums are scaled once per block.
// q16 keeps the result within ~1e-5 of the float computation (bf16 rounding is 4e-3), so every
// library comparison keeps its tolerance.
//
// The *Avx2 functions live in cpu_kernels_avx2.cc, the only file compiled with -mavx2 -mfma;
// it includes no ATen header (an inline ATen function compiled for AVX2 could be picked by the
// linker for every caller), so callers must check HasAvx2Fma() before calling them. The
// *Scalar twins are portable and compute the same integer block sums; float sums may round
// differently.
//
// Packed 4-bit layout ("lut4 word layout"): for each output row n, for each chunk c of 64
// input columns, 32 bytes read as 16 little-endian uint16 words; word j (0..15) holds in its
// nibble p (bits 4p..4p+3) the code of column 64c + 16p + j. Shifting and masking the 16 words
// gives four vectors of 16 int16 codes in column order, with no shuffle. Rows are padded to
// a multiple of 64 columns with code 0 (the padded activations are 0). Row n starts at
// packed + n * KP / 2, KP = K rounded up to 64.

#include <cstdint>

namespace quantserve::quant::kernels::internal {

// Columns per quantization block of the activations; every 4-bit group is a multiple of it.
inline constexpr int64_t kQ16Block = 32;
// Columns per packed 4-bit chunk (32 bytes).
inline constexpr int64_t kLut4Chunk = 64;

inline int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Quantized activation rows. Row m of q holds KP = RoundUp(K, 64) int16 codes (padding 0);
// d and bsum hold KP / 32 floats per row: the block's scale and d * (sum of its codes), the
// block's sum as the kernel sees it (used for zero points).
struct Q16Rows {
  const int16_t* q = nullptr;
  const float* d = nullptr;
  const float* bsum = nullptr;
  int64_t kp = 0;
};

// Quantizes rows x[m, 0..k) (row stride ldx) into q [rows, kp], d and bsum [rows, kp / 32].
void QuantizeQ16Avx2(const float* x, int64_t ldx, int64_t rows, int64_t k, int64_t kp,
                     int16_t* q, float* d, float* bsum);
void QuantizeQ16Scalar(const float* x, int64_t ldx, int64_t rows, int64_t k, int64_t kp,
                       int16_t* q, float* d, float* bsum);

// A 4-bit weight in the word layout. Requires K % 32 == 0 and group_size % 32 == 0.
struct Lut4Layout {
  const uint8_t* packed = nullptr;  // [N, KP / 2]
  const float* scale = nullptr;     // [N, K / group_size], already divided by table_scale
  const float* offset = nullptr;    // [N, K / group_size] or null (no offset)
  const int16_t* table = nullptr;   // [16] code -> int16 value (lut * table_scale, rounded)
  const float* lut = nullptr;       // [16] code -> float value (for dequantizing)
  bool affine = false;              // table[i] == i: codes are their own values
  int64_t k = 0;
  int64_t group_size = 0;
};

// The low and high bytes of the 16 int16 table entries, as the two 16-byte tables the vector
// kernels look codes up in with pshufb.
struct Lut4TableBytes {
  alignas(16) uint8_t lo[16];
  alignas(16) uint8_t hi[16];
  explicit Lut4TableBytes(const int16_t* table) {
    for (int i = 0; i < 16; ++i) {
      const uint16_t v = static_cast<uint16_t>(table[i]);
      lo[i] = static_cast<uint8_t>(v & 0xFF);
      hi[i] = static_cast<uint8_t>(v >> 8);
    }
  }
};

// y[m, n] (n in [n0, n1), m < rows) = sum_k x[m, k] * w[n, k] with x given as q16 rows.
// xg[m, g] is the sum of row m's group g as quantized (Q16 bsum summed per group); used only
// with an offset. y has row stride ldy.
void Lut4Q16Avx2(const Lut4Layout& w, const Q16Rows& x, const float* xg, int64_t rows, float* y,
                 int64_t ldy, int64_t n0, int64_t n1);
void Lut4Q16Scalar(const Lut4Layout& w, const Q16Rows& x, const float* xg, int64_t rows,
                   float* y, int64_t ldy, int64_t n0, int64_t n1);
// The AVX-512 VNNI variant (cpu_kernels_avx512.cc) reads two 64-column chunks per 512-bit
// load, so its input is reordered once per matmul ("pair order"): for each 128 columns and
// p = 0..3, the 16 columns 16p.. of the first chunk, then the 16 columns 16p.. of the second, so
// that one shift-and-mask of the loaded words meets one contiguous activation vector. dv holds,
// per 128 columns, 32 floats: 8 copies of d for blocks 0 and 2, then 8 copies for blocks 1 and 3
// (the blocks each int32 lane of vpdpwssd sums).
struct Q16PairRows {
  const int16_t* q = nullptr;  // [rows, kp2], kp2 = RoundUp(K, 128), zero padded
  const float* dv = nullptr;   // [rows, kp2 / 4]
  int64_t kp2 = 0;
};
inline constexpr int64_t kLut4Pair = 2 * kLut4Chunk;
// Writes q2 [rows, kp2] and dv [rows, kp2 / 4] from x (scalar; O(rows * K)).
void PairQ16Rows(const Q16Rows& x, int64_t rows, int64_t kp2, int16_t* q2, float* dv);
// Lut4Q16Avx2 on AVX-512 (F, BW, VNNI): vpdpwssd on 32 codes per instruction and, for tables,
// one vpermw per 32 codes. Requires HasAvx512Vnni().
void Lut4Q16Avx512(const Lut4Layout& w, const Q16PairRows& x, const float* xg, int64_t rows,
                   float* y, int64_t ldy, int64_t n0, int64_t n1);
// Opt-in int8 activations ("q8", as llama.cpp's Q8 inputs; Lut4Weight::activation_bits = 8):
// each input row is rounded to int8 per 64 columns (one chunk: x ~= d[c] * q[k], |q| <= 127) and
// meets the 4-bit codes in vpdpbusd, 64 products per instruction. Tables (NF4, FP4) are rounded
// to int8 and shifted by 128 to be unsigned: t8[i] = round(lut[i] * s8) + 128, s8 =
// Q8TableScale(lut); the shift comes back out through the group sums of the input, as zero
// points do. Requires group_size % 64 == 0.
inline constexpr int64_t kQ8Block = kLut4Chunk;
// The input in nibble order: per 128 columns (a chunk pair, one 512-bit load of codes), 64 bytes
// that meet the low nibbles of the loaded bytes, then 64 that meet the high nibbles. Byte b of
// each half belongs to chunk b / 32; with j = (b % 32) / 2 its column in that chunk is j, 32 + j
// (low nibbles; b even, odd) or 16 + j, 48 + j (high nibbles). dv holds per pair 16 floats: 8
// copies of chunk A's d, 8 of chunk B's (the chunks the int32 lanes of vpdpbusd sum). bsum holds
// per chunk d * (sum of its codes).
struct Q8PairRows {
  const int8_t* q = nullptr;    // [rows, kp2], kp2 = RoundUp(K, 128), zero padded
  const float* dv = nullptr;    // [rows, kp2 / 8]
  const float* bsum = nullptr;  // [rows, kp2 / 64]
  int64_t kp2 = 0;
};
// The column (within its 128-column pair) that byte b (0..127) of a pair of Q8PairRows holds.
inline int64_t Q8PairColumn(int64_t b) {
  const int64_t half = b / 64, chunk = (b % 64) / 32, j = (b % 32) / 2, odd = b % 2;
  return chunk * kLut4Chunk + 16 * half + 32 * odd + j;
}
// Quantizes rows x[m, 0..k) (row stride ldx) into q, dv and bsum (portable; the same codes on
// every CPU: round half to even, as the hardware conversion does).
void QuantizeQ8PairRows(const float* x, int64_t ldx, int64_t rows, int64_t k, int64_t kp2,
                        int8_t* q, float* dv, float* bsum);
// y[m, n] (n in [n0, n1), m < rows) = sum_k x[m, k] * w8[n, k], where w8 is w with its table
// replaced by (t8 - 128) / s8 (tables) or kept (affine). w.scale is the q16 one (divided by
// Q16TableScale); rescale = Q16TableScale / Q8TableScale brings it to the int8 table. xg[m, g]
// = sum of row m's group g as quantized (bsum summed per group). t8 is null for affine tables.
void Lut4Q8Avx512(const Lut4Layout& w, const uint8_t* t8, float rescale, const Q8PairRows& x,
                  const float* xg, int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1);
void Lut4Q8Scalar(const Lut4Layout& w, const uint8_t* t8, float rescale, const Q8PairRows& x,
                  const float* xg, int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1);
// Writes the float weight rows [n0, n1) to out (row stride K).
void Lut4DequantAvx2(const Lut4Layout& w, int64_t n0, int64_t n1, float* out);
void Lut4DequantScalar(const Lut4Layout& w, int64_t n0, int64_t n1, float* out);

// Int8 rowwise: y[m, n] = scale[n] * sum_k x[m, k] * codes[n, k], codes [N, K] row-major
// (the module's own tensor: no copy), x as q16 rows.
void Int8Q16Avx2(const int8_t* codes, const float* scale, int64_t k, const Q16Rows& x,
                 int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1);
void Int8Q16Scalar(const int8_t* codes, const float* scale, int64_t k, const Q16Rows& x,
                   int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1);

// Dense bf16 weights (the module's own tensor, no copy): y[m, n] = sum_k x[m, k] * w[n, k] for
// m < rows, n in [n0, n1); w holds bf16 bit patterns with row stride ldw, y has row stride ldy.
// Each (m, n) sum runs in the same order whatever `rows` and [n0, n1) are, so a row's result
// does not depend on its batch or the thread split.
// AVX512-BF16 (cpu_kernels_avx512.cc): x as bf16 rows (row stride ldx), vdpbf16ps; the
// products are exact and summed in float32. Requires HasNativeBf16().
void Bf16GemvAvx512(const uint16_t* w, int64_t ldw, int64_t k, const uint16_t* x, int64_t ldx,
                    int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1);
// AVX2 + FMA and portable twins: x as float32 rows (row stride ldx).
void Bf16GemvAvx2(const uint16_t* w, int64_t ldw, int64_t k, const float* x, int64_t ldx,
                  int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1);
void Bf16GemvScalar(const uint16_t* w, int64_t ldw, int64_t k, const float* x, int64_t ldx,
                    int64_t rows, float* y, int64_t ldy, int64_t n0, int64_t n1);

// Single-query attention over one sequence's cache (a decode step), for the KV heads
// [g0, g1): query head h reads KV head h / (n_heads / n_kv). scores = q.k * scale over the
// positions [lo, hi), probabilities p = exp(score - max) summed in float32, then
// out[h] = sum_j p'[j] v[j] / sum p, where p' is p rounded to bf16 when round_probs (as LibTorch's
// flash attention does before its P.V product with bf16 inputs) and p otherwise.
struct DecodeAttentionArgs {
  const float* q = nullptr;      // [n_heads, d]
  const void* k = nullptr;       // KV head g, position j at k + g * head_stride + j * d
  const void* v = nullptr;       // the same layout as k
  bool bf16 = false;             // cache elements are bf16 bit patterns (else float32)
  int64_t n_heads = 0, n_kv = 0, d = 0;
  int64_t head_stride = 0;       // elements between KV heads (the cache's capacity * d)
  int64_t lo = 0, hi = 0;        // positions attended, lo < hi
  float scale = 1.f;
  bool round_probs = false;
  float* out = nullptr;          // [n_heads, d]
  float* scratch = nullptr;      // DecodeAttentionScratch(*this) floats, one buffer per thread
};
inline int64_t DecodeAttentionScratch(const DecodeAttentionArgs& a) {
  const int64_t group = a.n_heads / a.n_kv;
  return group * (a.hi - a.lo) + group * a.d + a.d + group;
}
// The AVX2 variant needs d % 8 == 0.
void DecodeAttentionAvx2(const DecodeAttentionArgs& a, int64_t g0, int64_t g1);
void DecodeAttentionScalar(const DecodeAttentionArgs& a, int64_t g0, int64_t g1);

// True when the CPU runs AVX2 and FMA (cached).
bool HasAvx2Fma();
// True when the CPU runs AVX-512 F, BW and VNNI (cached): Lut4Q16Avx512.
bool HasAvx512Vnni();
// True when the CPU has native bf16 dot products (AVX512-BF16; cached). LibTorch's bf16 GEMM
// then runs about twice its float32 rate (measured 210 vs 97 GFLOP/s per core on Zen 4).
bool HasNativeBf16();

}  // namespace quantserve::quant::kernels::internal
