#include "models/layers.h"

#include <ATen/ATen.h>

#include "quant/kernels/dense.h"
#include "quant/kernels/fused_ops.h"
#include "quant/kernels/packed_weight.h"

namespace quantserve::models {

at::Tensor MetaTensor(const std::vector<int64_t>& shape, c10::ScalarType dtype) {
  return at::empty(shape, at::TensorOptions().dtype(dtype).device(at::kMeta));
}

DenseLinear::DenseLinear(const LinearOptions& options) : Linear(options) {
  weight = MetaTensor({options.out_features, options.in_features}, options.dtype);
  RegisterParameter("weight", &weight);
  if (options.bias) {
    bias = MetaTensor({options.out_features}, options.dtype);
    RegisterParameter("bias", &bias);
  }
}

std::vector<at::Tensor> ForwardSameInput(const std::vector<const Linear*>& linears,
                                         const at::Tensor& x) {
  std::vector<const quant::kernels::PackedWeight*> packed;
  for (const Linear* l : linears) {
    const quant::kernels::PackedWeight* w = l->DirectPackedWeight(x.scalar_type());
    if (w == nullptr) break;
    packed.push_back(w);
  }
  if (packed.size() == linears.size() && !packed.empty()) {
    return quant::kernels::MatmulSameInput(packed, x);
  }
  std::vector<at::Tensor> ys;
  ys.reserve(linears.size());
  for (const Linear* l : linears) ys.push_back(l->Forward(x));
  return ys;
}

at::Tensor DenseLinear::Forward(const at::Tensor& x) const {
  return quant::kernels::DenseLinear(x, weight, bias);
}

std::string DenseLinear::kernel_name() const { return quant::kernels::DenseKernelName(weight); }

int64_t DenseLinear::memory_footprint_bytes() const {
  int64_t n = weight.numel() * weight.element_size();
  if (bias.defined()) n += bias.numel() * bias.element_size();
  return n;
}

Embedding::Embedding(int64_t num_embeddings, int64_t dim, c10::ScalarType dtype) {
  weight = MetaTensor({num_embeddings, dim}, dtype);
  RegisterParameter("weight", &weight);
}

at::Tensor Embedding::Forward(const at::Tensor& ids) const { return at::embedding(weight, ids); }

RmsNorm::RmsNorm(int64_t dim, double eps, c10::ScalarType dtype) : eps_(eps) {
  weight = MetaTensor({dim}, dtype);
  RegisterParameter("weight", &weight);
}

at::Tensor RmsNorm::Forward(const at::Tensor& x) const {
  if (quant::kernels::FusedOpsFit(x) && weight.scalar_type() == x.scalar_type() &&
      weight.is_contiguous()) {
    return quant::kernels::RmsNorm(x, weight, eps_);
  }
  return quant::kernels::RmsNormRef(x, weight, eps_);
}

LayerNorm::LayerNorm(int64_t dim, double eps, c10::ScalarType dtype) : dim_(dim), eps_(eps) {
  weight = MetaTensor({dim}, dtype);
  bias = MetaTensor({dim}, dtype);
  RegisterParameter("weight", &weight);
  RegisterParameter("bias", &bias);
}

at::Tensor LayerNorm::Forward(const at::Tensor& x) const {
  return at::layer_norm(x, {dim_}, weight, bias, eps_);
}

}  // namespace quantserve::models
