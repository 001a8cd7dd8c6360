#include "quant/methods/aqlm/aqlm_linear.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace quantserve::quant {

c10::ScalarType AqlmLinear::CodesDtype(int64_t nbits) {
  if (nbits <= 8) return at::kChar;
  if (nbits <= 16) return at::kShort;
  return at::kInt;
}

absl::StatusOr<std::shared_ptr<AqlmLinear>> AqlmLinear::Create(const std::string& name,
                                                               const models::LinearOptions& linear,
                                                               const AqlmConfig& config) {
  if (config.in_group_size <= 0 || config.out_group_size <= 0 || config.num_codebooks <= 0 ||
      config.nbits_per_codebook <= 0 || config.nbits_per_codebook > 32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "aqlm needs positive in_group_size, out_group_size, num_codebooks and "
        "nbits_per_codebook <= 32; got ",
        config.in_group_size, ", ", config.out_group_size, ", ", config.num_codebooks, ", ",
        config.nbits_per_codebook));
  }
  if (linear.in_features % config.in_group_size != 0 ||
      linear.out_features % config.out_group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "aqlm module ", name, " is [", linear.out_features, ", ", linear.in_features,
        "] but out_features must be a multiple of out_group_size ", config.out_group_size,
        " and in_features of in_group_size ", config.in_group_size));
  }
  return std::shared_ptr<AqlmLinear>(new AqlmLinear(linear, config));
}

AqlmLinear::AqlmLinear(const models::LinearOptions& linear, const AqlmConfig& config)
    : QuantizedLinear(linear), config_(config) {
  const int64_t go = config.out_group_size;
  const int64_t gi = config.in_group_size;
  const int64_t c = config.num_codebooks;
  codes = models::MetaTensor({linear.out_features / go, linear.in_features / gi, c},
                             CodesDtype(config.nbits_per_codebook));
  RegisterParameter("codes", &codes);
  codebooks = models::MetaTensor({c, int64_t{1} << config.nbits_per_codebook, go, gi},
                                 linear.dtype);
  RegisterParameter("codebooks", &codebooks);
  scales = models::MetaTensor({linear.out_features / go, 1, 1, 1}, linear.dtype);
  RegisterParameter("scales", &scales);
  RegisterBias();
  RegisterRuntimeTensor(&indices_);
}

std::string AqlmLinear::LayoutName() const {
  return absl::StrCat("aqlm ", config_.num_codebooks, "x", config_.nbits_per_codebook,
                      " (in_group_size ", config_.in_group_size, ", out_group_size ",
                      config_.out_group_size, ")");
}

absl::Status AqlmLinear::QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) {
  return absl::FailedPreconditionError(
      "AQLM codebooks are learned offline with calibration data; load a pre-quantized AQLM "
      "checkpoint");
}

absl::Status AqlmLinear::LoadSerializedTensor(const std::string& local,
                                              const std::string& full_name,
                                              const at::Tensor& value, const LoadTarget& target) {
  at::Tensor* slot = nullptr;
  if (local == "codes") {
    slot = &codes;
  } else if (local == "codebooks") {
    slot = &codebooks;
  } else if (local == "scales") {
    slot = &scales;
  }
  if (slot == nullptr) {
    return QuantizedLinear::LoadSerializedTensor(local, full_name, value, target);
  }
  // Codes must be in the exact container aqlm's get_int_dtype gives (a wider container with a
  // narrower nbits is a different checkpoint); float tensors convert to the compute dtype, as
  // transformers' load does.
  const bool float_ok = slot != &codes && at::isFloatingType(value.scalar_type()) &&
                        c10::elementSize(value.scalar_type()) > 1;
  QS_RETURN_IF_ERROR(ExpectTensor(full_name, value, slot->sizes(),
                                  float_ok ? value.scalar_type() : slot->scalar_type(),
                                  LayoutName()));
  *slot = value.to(at::TensorOptions().dtype(slot->scalar_type()).device(target.device),
                   /*non_blocking=*/false, /*copy=*/true);
  return absl::OkStatus();
}

absl::Status AqlmLinear::FinishSerializedLoad(const std::string& name, const LoadTarget& target) {
  const int64_t nbits = config_.nbits_per_codebook;
  const int64_t size = int64_t{1} << nbits;
  const int64_t container = c10::elementSize(codes.scalar_type()) * 8;
  at::Tensor wide = codes.to(at::kLong);
  if (nbits < container) {
    // pack_int_data writes [-S/2, S/2); an unsigned writer may use [0, S). Anything else maps
    // to an index only by accident of the modulo.
    at::Tensor bad = (wide < -(size / 2)) | (wide >= size);
    if (bad.any().item<bool>()) {
      at::Tensor where = bad.nonzero()[0];
      return absl::DataLossError(absl::StrCat(
          "tensor '", name, ".codes' has codes beyond codebook: value ",
          wide.index({where[0], where[1], where[2]}).item<int64_t>(), " at [",
          absl::StrJoin(std::vector<int64_t>{where[0].item<int64_t>(), where[1].item<int64_t>(),
                                             where[2].item<int64_t>()},
                        ", "),
          "] is outside [", -(size / 2), ", ", size, ") for a ", size, "-entry codebook (",
          LayoutName(), ")"));
    }
  }
  for (const auto& [local, t] : {std::pair<const char*, const at::Tensor*>{"codebooks", &codebooks},
                                 std::pair<const char*, const at::Tensor*>{"scales", &scales}}) {
    if (!at::isfinite(*t).all().item<bool>()) {
      return absl::DataLossError(
          absl::StrCat("tensor '", name, ".", local, "' has non-finite values"));
    }
  }
  // unpack_int_data (code mod S) plus _dequantize_weight's codebook offsets, once.
  const int64_t c = config_.num_codebooks;
  at::Tensor offsets = at::arange(0, c * size, size, at::TensorOptions().dtype(at::kLong));
  indices_ = (at::remainder(wide, size).reshape({-1, c}) + offsets.to(wide.device()))
                 .to(at::kInt)
                 .reshape({-1});
  return absl::OkStatus();
}

at::Tensor AqlmLinear::Dequantize() const {
  const int64_t go = config_.out_group_size;
  const int64_t gi = config_.in_group_size;
  const int64_t o = options().out_features / go;
  const int64_t i = options().in_features / gi;
  // F.embedding_bag(codes + offsets, codebooks.flatten(0, 1).flatten(-2, -1), mode="sum").
  at::Tensor table = codebooks.flatten(0, 1).flatten(-2, -1);
  // A 2-D input is one bag per row: F.embedding_bag flattens it with offsets 0, C, 2C, ...
  const int64_t c = config_.num_codebooks;
  at::Tensor bags = at::arange(0, indices_.numel(), c, indices_.options());
  at::Tensor flat = std::get<0>(at::embedding_bag(table, indices_, bags,
                                                  /*scale_grad_by_freq=*/false, /*mode=*/0));
  at::Tensor w = flat.view({o, i, go, gi}).mul(scales);
  return w.swapaxes(-3, -2).reshape({o * go, i * gi}).to(options().dtype);
}

}  // namespace quantserve::quant
