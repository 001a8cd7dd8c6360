#include "quant/quantized_linear.h"

#include <ATen/ATen.h>

#include <unordered_set>

namespace quantserve::quant {

void QuantizedLinear::RegisterBias() {
  if (!options().bias) return;
  bias = models::MetaTensor({options().out_features}, options().dtype);
  RegisterParameter("bias", &bias);
}

at::Tensor QuantizedLinear::Forward(const at::Tensor& x) const {
  at::Tensor w = Dequantize().to(x.scalar_type());
  return at::linear(x, w, bias.defined() ? std::optional<at::Tensor>(bias.to(x.scalar_type()))
                                         : std::nullopt);
}

int64_t QuantizedLinear::memory_footprint_bytes() const {
  int64_t n = 0;
  std::unordered_set<const void*> seen;
  for (const auto& p : NamedParameters()) {
    const at::Tensor& t = *p.slot.tensor;
    if (!t.defined() || t.is_meta() || !seen.insert(t.data_ptr()).second) continue;
    n += t.numel() * static_cast<int64_t>(t.element_size());
  }
  return n;
}

}  // namespace quantserve::quant
