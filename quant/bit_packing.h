#pragma once
// Bit packing shared by the methods' serialized layouts (AWQ, compressed-tensors): the inverse
// of their unpackers, used to rebuild a layer's serialized codes from its packed kernel's.

#include <ATen/core/Tensor.h>

namespace quantserve::quant {

// [R, 8C] integer values in 0..15 -> int32 [R, C], value 8c + i in bits 4i..4i+3 of word c
// (little-endian nibbles: AutoAWQ's GEMV `qweight`, compressed-tensors' 4-bit `weight_packed`
// with the +8 offset already applied). Words with the top nibble >= 8 are negative.
at::Tensor PackNibblesToInt32(const at::Tensor& values);

}  // namespace quantserve::quant
