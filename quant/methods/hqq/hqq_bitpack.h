#pragma once
// hqq's bit packing (hqq/core/bitpack.py BitPack) as a table plus one pack and one unpack.
//
// The packing is planar: the code matrix [rows, cols] is cut into `per_word` equal chunks of
// rows, and chunk i goes to bit field i of the packed row (most significant first). So for
// 4-bit, packed[r, c] = q[r, c] << 4 | q[r + rows/2, c]. The 3-bit format zero-pads the rows to
// a multiple of 10 and packs 10 chunks into the low 30 bits of an int32 (chunk i at 27 - 3i);
// unpacking returns the padded rows, which the caller trims (Quantizer.dequantize).

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

namespace quantserve::quant {

struct HqqPacking {
  const char* name;          // hqq's meta["packing"]
  int bits;                  // width of one code's bit field
  int64_t per_word;          // codes per packed element (row chunks)
  c10::ScalarType storage;   // packed dtype (also hqq's unpack_view_dtype)
  const char* storage_name;  // str(torch dtype) of `storage`
  bool pads_rows;            // rows zero-padded to a multiple of per_word (3-bit)
};

// Quantizer.bit_to_packing: 8, 6, 5 -> 8bit_u8; 4 -> 4bit_u8; 3 -> 3bit_32; 2 and 1.58 ->
// 2bit_u8; 1 -> 1bit_u8. `nbits` must be one of those.
const HqqPacking& HqqPackingForBits(double nbits);

// Packed rows for `rows` code rows; -1 when the format needs rows % per_word == 0 and it is not
// (hqq's slicing would silently mis-pack such a matrix).
int64_t HqqPackedRows(const HqqPacking& packing, int64_t rows);

// codes: [rows, cols], integral values in [0, 2^bits) in any dtype. Returns
// [HqqPackedRows(rows), cols] in packing.storage.
at::Tensor HqqPack(const at::Tensor& codes, const HqqPacking& packing);

// packed: [p, cols] in packing.storage. Returns [p * per_word, cols] codes in `dtype`.
at::Tensor HqqUnpack(const at::Tensor& packed, const HqqPacking& packing, c10::ScalarType dtype);

// "torch.float32" etc., as str(dtype) prints it (hqq stores compute_dtype that way).
std::string TorchDtypeName(c10::ScalarType dtype);

}  // namespace quantserve::quant
