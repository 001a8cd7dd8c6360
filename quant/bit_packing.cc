#include "quant/bit_packing.h"

#include <ATen/ATen.h>

namespace quantserve::quant {

at::Tensor PackNibblesToInt32(const at::Tensor& values) {
  const at::Tensor shifts = at::arange(0, 32, 4, values.options().dtype(at::kLong));
  const at::Tensor v = values.to(at::kLong).reshape({values.size(0), -1, 8});
  at::Tensor words = at::bitwise_left_shift(v, shifts).sum(-1);  // < 2^32, exact in int64
  words = at::where(words >= (int64_t{1} << 31), words - (int64_t{1} << 32), words);
  return words.to(at::kInt);
}

}  // namespace quantserve::quant
