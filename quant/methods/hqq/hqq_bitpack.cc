#include "quant/methods/hqq/hqq_bitpack.h"

#include <ATen/ATen.h>

#include <vector>

namespace quantserve::quant {
namespace {

constexpr HqqPacking kPackings[] = {
    {"8bit_u8", 8, 1, c10::ScalarType::Byte, "torch.uint8", false},
    {"4bit_u8", 4, 2, c10::ScalarType::Byte, "torch.uint8", false},
    {"3bit_32", 3, 10, c10::ScalarType::Int, "torch.int32", true},
    {"2bit_u8", 2, 4, c10::ScalarType::Byte, "torch.uint8", false},
    {"1bit_u8", 1, 8, c10::ScalarType::Byte, "torch.uint8", false},
};

}  // namespace

const HqqPacking& HqqPackingForBits(double nbits) {
  if (nbits >= 5) return kPackings[0];
  if (nbits == 4) return kPackings[1];
  if (nbits == 3) return kPackings[2];
  if (nbits > 1) return kPackings[3];  // 2 and 1.58
  return kPackings[4];
}

int64_t HqqPackedRows(const HqqPacking& packing, int64_t rows) {
  if (packing.pads_rows) return (rows + packing.per_word - 1) / packing.per_word;
  return rows % packing.per_word == 0 ? rows / packing.per_word : -1;
}

at::Tensor HqqPack(const at::Tensor& codes, const HqqPacking& packing) {
  const int64_t rows = codes.size(0);
  const int64_t step = HqqPackedRows(packing, rows);
  TORCH_CHECK(step >= 0, "hqq ", packing.name, " packing needs rows divisible by ",
              packing.per_word, " (got ", rows, ")");
  at::Tensor q = codes.to(packing.storage);
  if (packing.pads_rows && step * packing.per_word != rows) {
    q = at::constant_pad_nd(q, {0, 0, 0, step * packing.per_word - rows}, 0);
  }
  at::Tensor out = at::zeros({step, codes.size(1)}, q.options());
  for (int64_t i = 0; i < packing.per_word; ++i) {
    const int64_t shift = packing.bits * (packing.per_word - 1 - i);
    out.bitwise_or_(q.slice(0, i * step, (i + 1) * step).bitwise_left_shift(shift));
  }
  return out;
}

at::Tensor HqqUnpack(const at::Tensor& packed, const HqqPacking& packing, c10::ScalarType dtype) {
  const int64_t mask = (int64_t{1} << packing.bits) - 1;
  std::vector<at::Tensor> chunks;
  chunks.reserve(packing.per_word);
  for (int64_t i = 0; i < packing.per_word; ++i) {
    const int64_t shift = packing.bits * (packing.per_word - 1 - i);
    chunks.push_back(packed.bitwise_right_shift(shift).bitwise_and_(mask));
  }
  return at::cat(chunks, 0).to(dtype);
}

std::string TorchDtypeName(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float:
      return "torch.float32";
    case c10::ScalarType::BFloat16:
      return "torch.bfloat16";
    case c10::ScalarType::Half:
      return "torch.float16";
    case c10::ScalarType::Double:
      return "torch.float64";
    default:
      return std::string("torch.") + c10::toString(dtype);
  }
}

}  // namespace quantserve::quant
