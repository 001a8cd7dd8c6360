#pragma once
// EETQ's on-disk weight layout: the int8 Q [in, out] as CUTLASS's fpA_intB GEMM reads it on
// Turing/Ampere/Ada (SM 7.5-8.9; EETQ's preprocess_weights_for_mixed_gemm, which refuses
// SM >= 9.0 and stores SM 7.0 row-major without the first three steps). Four steps, in order:
//   1. rows permuted inside every 16-row block: out row t = in row 8·((t%4)/2) + t%2 + 2·(t/4)
//      (0 1 8 9 2 3 10 11 4 5 12 13 6 7 14 15)
//   2. transposed to column-major (bytes ordered [out][in])
//   3. ColumnMajorTileInterleave<64, 2>: for each pair of output columns, 64-row tiles of the
//      two columns alternate, in 4-byte words
//   4. +128 on every byte (int8 wrap) and bytes 1 and 2 of every 4-byte group swapped
// The tensor keeps the shape [in, out]; only the byte order changes. A checkpoint does not say
// which arch produced it: this is the layout of every EETQ checkpoint made on SM 7.5-8.9.
//
// EetqLinear keeps the plain Q in memory; SaveModel writes EetqPreprocessSm80(Q) and a loader
// of EETQ checkpoints applies EetqUnpreprocessSm80.

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace quantserve::quant {

// Plain int8 [in, out] -> preprocessed bytes, same shape. INVALID_ARGUMENT unless the tensor is
// int8 2-D with in % 64 == 0 and out % 64 == 0.
absl::StatusOr<at::Tensor> EetqPreprocessSm80(const at::Tensor& q);
// The inverse: preprocessed int8 [in, out] -> plain Q. Same shape rule.
absl::StatusOr<at::Tensor> EetqUnpreprocessSm80(const at::Tensor& preprocessed);

}  // namespace quantserve::quant
