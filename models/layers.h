#pragma once
// Building blocks shared by the architectures: Linear (an interface, so quantizers can swap in
// their own modules), Embedding, RMSNorm and LayerNorm. Each mirrors its transformers
// counterpart's math and dtype handling exactly, so float32 outputs match token for token.

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>
#include <vector>

#include "models/module.h"

namespace quantserve::quant::kernels {
class PackedWeight;
}  // namespace quantserve::quant::kernels

namespace quantserve::models {

// Tensor options for a skeleton parameter: `dtype` on the meta device (no memory).
at::Tensor MetaTensor(const std::vector<int64_t>& shape, c10::ScalarType dtype);

struct LinearOptions {
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = false;
  c10::ScalarType dtype = c10::ScalarType::Float;  // compute dtype
  // Quantized layers: the CPU 4-bit kernels' input precision, 16 or 8
  // (quant::kernels::Lut4Weight::activation_bits). Dense layers ignore it.
  int activation_bits = 16;
};

// y = x W^T + b. The interface every quantized linear implements; a quantizer's
// ProcessModelBeforeWeightLoading replaces DenseLinear children with its own subclass.
class Linear : public Module {
 public:
  explicit Linear(const LinearOptions& options) : options_(options) {}
  const LinearOptions& options() const { return options_; }
  virtual at::Tensor Forward(const at::Tensor& x) const = 0;
  // Which kernel the forward runs ("aten_linear", "gemv_w4a32_nf4", ...), for ModelInfo/metrics.
  virtual std::string kernel_name() const = 0;
  // Bytes held by this module's weights and quantization state.
  virtual int64_t memory_footprint_bytes() const = 0;
  // The packed weight whose Matmul(x) is exactly Forward(x) for an input of dtype `x_dtype`
  // (no bias, no conversion), or null. Lets projections that read one input quantize it once
  // (ForwardSameInput).
  virtual const quant::kernels::PackedWeight* DirectPackedWeight(c10::ScalarType x_dtype) const {
    return nullptr;
  }

 protected:
  LinearOptions options_;
};

// linears[i]->Forward(x) for projections that read the same input (a layer's q/k/v, gate/up),
// bit for bit; when every one has a DirectPackedWeight, through kernels::MatmulSameInput (the
// input quantized once, one parallel loop).
std::vector<at::Tensor> ForwardSameInput(const std::vector<const Linear*>& linears,
                                         const at::Tensor& x);

// The unquantized nn.Linear: `weight` [out, in] and optional `bias` [out]. Decode-sized bf16
// inputs on CPU run our bf16 GEMV (quant/kernels/dense.h), the rest at::linear.
class DenseLinear final : public Linear {
 public:
  explicit DenseLinear(const LinearOptions& options);
  at::Tensor Forward(const at::Tensor& x) const override;
  // "bf16_gemv_avx512"/"bf16_gemv_avx2" for bf16 weights on such a CPU, else "aten_linear"
  // (see quant/kernels/dense.h).
  std::string kernel_name() const override;
  int64_t memory_footprint_bytes() const override;
  const char* type_name() const override { return "Linear"; }

  at::Tensor weight;
  at::Tensor bias;
};

class Embedding final : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t dim, c10::ScalarType dtype);
  at::Tensor Forward(const at::Tensor& ids) const;
  const char* type_name() const override { return "Embedding"; }

  at::Tensor weight;
};

// LlamaRMSNorm: normalizes in float32, multiplies by the weight in the input dtype.
class RmsNorm final : public Module {
 public:
  RmsNorm(int64_t dim, double eps, c10::ScalarType dtype);
  at::Tensor Forward(const at::Tensor& x) const;
  const char* type_name() const override { return "RMSNorm"; }

  at::Tensor weight;

 private:
  double eps_;
};

// nn.LayerNorm with weight and bias.
class LayerNorm final : public Module {
 public:
  LayerNorm(int64_t dim, double eps, c10::ScalarType dtype);
  at::Tensor Forward(const at::Tensor& x) const;
  const char* type_name() const override { return "LayerNorm"; }

  at::Tensor weight;
  at::Tensor bias;

 private:
  int64_t dim_;
  double eps_;
};

}  // namespace quantserve::models
