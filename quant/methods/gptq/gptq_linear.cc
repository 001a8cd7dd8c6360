#include "quant/methods/gptq/gptq_linear.h"

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/torch_status.h"
#include "quant/kernels/packed_weight.h"

namespace quantserve::quant {
namespace {

// Per-word constant GPTQModel adds to v1 packed zeros (one 1 per field).
uint32_t V1WordOffset(int64_t bits) {
  switch (bits) {
    case 2:
      return 0x55555555u;
    case 4:
      return 0x11111111u;
    default:
      return 0x01010101u;  // 8
  }
}

int64_t PackDivisor(int64_t bits) { return bits == 3 ? 32 : 32 / bits; }

}  // namespace

at::Tensor GptqUnpackRows(const at::Tensor& packed, int64_t bits, int64_t rows) {
  const at::Tensor p = packed.to(at::kCPU).to(at::kInt).contiguous();
  const int64_t cols = p.size(1);
  at::Tensor out = at::empty({rows, cols}, at::kShort);
  const auto* in = reinterpret_cast<const uint32_t*>(p.data_ptr<int32_t>());
  auto* o = out.data_ptr<int16_t>();
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t bit = r * bits;
    const int64_t word = bit / 32;
    const int64_t shift = bit % 32;
    const bool spill = shift + bits > 32;
    for (int64_t c = 0; c < cols; ++c) {
      uint64_t v = static_cast<uint64_t>(in[word * cols + c]) >> shift;
      if (spill) v |= static_cast<uint64_t>(in[(word + 1) * cols + c]) << (32 - shift);
      o[r * cols + c] = static_cast<int16_t>(v & mask);
    }
  }
  return out;
}

at::Tensor GptqPackRows(const at::Tensor& values, int64_t bits) {
  const at::Tensor v = values.to(at::kCPU).to(at::kLong).contiguous();
  const int64_t rows = v.size(0);
  const int64_t cols = v.size(1);
  at::Tensor out = at::zeros({rows * bits / 32, cols}, at::kInt);
  auto* o = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>());
  const auto* in = v.data_ptr<int64_t>();
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t bit = r * bits;
    const int64_t word = bit / 32;
    const int64_t shift = bit % 32;
    for (int64_t c = 0; c < cols; ++c) {
      const uint64_t x = static_cast<uint64_t>(in[r * cols + c]) & mask;
      o[word * cols + c] |= static_cast<uint32_t>(x << shift);
      if (shift + bits > 32) o[(word + 1) * cols + c] |= static_cast<uint32_t>(x >> (32 - shift));
    }
  }
  return out;
}

at::Tensor GptqV1ToV2Zeros(const at::Tensor& qzeros, int64_t bits, int64_t out_features) {
  if (bits == 3) {
    // GPTQModel: INT3 fields straddle words, so the +1 is applied per decoded field (mod 8).
    at::Tensor z = GptqUnpackRows(qzeros.t().contiguous(), 3, out_features);
    return GptqPackRows(at::bitwise_and(z.to(at::kLong) + 1, 7), 3).t().contiguous();
  }
  at::Tensor out = qzeros.to(at::kCPU).to(at::kInt).contiguous().clone();
  auto* w = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>());
  const uint32_t offset = V1WordOffset(bits);
  for (int64_t i = 0; i < out.numel(); ++i) w[i] += offset;  // wraps like int32 +=
  return out;
}

GptqLinear::GptqLinear(const models::LinearOptions& linear, const GptqLinearOptions& options)
    : QuantizedLinear(linear), gptq_(options) {
  const int64_t k = linear.in_features;
  const int64_t n = linear.out_features;
  const int64_t gs = options.group_size == -1 ? k : options.group_size;
  groups_ = (k + gs - 1) / gs;
  qweight = models::MetaTensor({k * options.bits / 32, n}, at::kInt);
  qzeros = models::MetaTensor({groups_, n * options.bits / 32}, at::kInt);
  scales = models::MetaTensor({groups_, n}, at::kHalf);
  g_idx = models::MetaTensor({k}, at::kInt);
  RegisterParameter("qweight", &qweight);
  RegisterParameter("qzeros", &qzeros);
  RegisterParameter("scales", &scales);
  RegisterParameter("g_idx", &g_idx);
  (void)MarkOptional("g_idx");
  RegisterRuntimeTensor(&codes_);
  RegisterRuntimeTensor(&zeros_);
  RegisterRuntimeTensor(&groups_of_rows_);
  if (linear.bias) {
    bias = models::MetaTensor({n}, at::kHalf);  // GPTQModel packs bias as float16
    RegisterParameter("bias", &bias);
  }
}

absl::StatusOr<std::shared_ptr<GptqLinear>> GptqLinear::Create(
    const models::LinearOptions& linear, const GptqLinearOptions& options) {
  const int64_t d = PackDivisor(options.bits);
  if (linear.in_features % d != 0 || linear.out_features % d != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gptq ", options.bits, "-bit packs ", d, " values per ", options.bits == 3 ? "3 words" : "word",
        ": in_features ", linear.in_features, " and out_features ", linear.out_features,
        " must both be multiples of ", d));
  }
  return std::shared_ptr<GptqLinear>(new GptqLinear(linear, options));
}

std::string GptqLinear::What() const {
  return absl::StrCat("gptq ", gptq_.bits, "-bit group_size ", gptq_.group_size);
}

absl::Status GptqLinear::QuantizeWeight(const at::Tensor&, const LoadTarget&) {
  return absl::FailedPreconditionError(
      "GPTQ cannot quantize at load: it needs calibration data and a GPTQ run");
}

absl::Status GptqLinear::LoadSerializedTensor(const std::string& local,
                                              const std::string& full_name,
                                              const at::Tensor& value, const LoadTarget& target) {
  for (const auto& p : NamedParameters()) {
    if (p.name != local) continue;
    at::Tensor& slot = *p.slot.tensor;
    c10::ScalarType dtype = slot.scalar_type();
    // A float checkpoint tensor converts to the fp16 slot (load_state_dict's copy); int32
    // tensors must be int32.
    const bool convert = dtype == at::kHalf && at::isFloatingType(value.scalar_type()) &&
                         c10::elementSize(value.scalar_type()) > 1;
    const absl::Status shape_ok = ExpectTensor(full_name, value, slot.sizes(),
                                               convert ? value.scalar_type() : dtype, What());
    if (!shape_ok.ok()) {
      return convert ? ExpectTensor(full_name, value, slot.sizes(), dtype, What()) : shape_ok;
    }
    slot = value.to(at::TensorOptions().dtype(dtype).device(target.device), /*non_blocking=*/false,
                    /*copy=*/true);
    if (local == "g_idx") has_g_idx_ = true;
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tensor '", full_name, "' is not part of ", What(), "'s layout"));
}

absl::Status GptqLinear::FinishSerializedLoad(const std::string& name, const LoadTarget& target) {
  const int64_t k = options().in_features;
  const int64_t n = options().out_features;
  at::Tensor g;
  if (has_g_idx_) {
    g = g_idx.to(at::kCPU).to(at::kLong);
    const auto* gi = g.data_ptr<int64_t>();
    for (int64_t i = 0; i < k; ++i) {
      if (gi[i] < 0 || gi[i] >= groups_) {
        return absl::DataLossError(absl::StrCat(
            "tensor '", name, ".g_idx' has group ", gi[i], " at row ", i, ", outside [0, ",
            groups_, ") for ", What(), " with in_features ", k));
      }
    }
  } else {
    // No g_idx in the checkpoint: GPTQModel's default k // group_size.
    const int64_t gs = gptq_.group_size == -1 ? k : gptq_.group_size;
    g = at::floor_divide(at::arange(k, at::kLong), gs);
    g_idx = g.to(at::kInt).to(target.device);
  }
  const at::Tensor zeros_v2 =
      gptq_.v1_zeros ? GptqV1ToV2Zeros(qzeros, gptq_.bits, n) : qzeros.to(at::kCPU);
  codes_ = GptqUnpackRows(qweight, gptq_.bits, k).to(target.device);
  zeros_ = GptqUnpackRows(zeros_v2.t().contiguous(), gptq_.bits, n).t().contiguous().to(
      target.device);
  groups_of_rows_ = g.to(target.device);
  if (gptq_.bits == 4 && target.device.is_cpu() && KernelsEnabled()) {
    QS_RETURN_IF_ERROR(PackForCpu(name, g, target.device));
  }
  return absl::OkStatus();
}

absl::Status GptqLinear::PackForCpu(const std::string& name, const at::Tensor& g,
                                    const c10::Device& device) {
  const int64_t k = options().in_features;
  const int64_t gs = gptq_.group_size == -1 ? k : gptq_.group_size;
  if (k % gs != 0) return absl::OkStatus();  // a short last group: the kernel needs whole ones
  // Sorting the rows by group (stable: checkpoint order within a group) makes groups
  // contiguous; the kernel's groups are then rows [j·gs, (j+1)·gs), which holds only when
  // every group has exactly gs rows.
  const at::Tensor perm =
      std::get<1>(at::sort(g, /*stable=*/std::optional<bool>(true), /*dim=*/0, false));
  const at::Tensor contiguous_groups = at::floor_divide(at::arange(k, at::kLong), gs);
  if (!at::equal(g.index_select(0, perm), contiguous_groups)) return absl::OkStatus();
  const bool permuted = !at::equal(g, contiguous_groups);

  kernels::Lut4Weight w;
  at::Tensor codes = codes_.to(at::kCPU).t();  // [N, K]
  if (permuted) codes = codes.index_select(1, perm);
  w.codes = codes.to(at::kByte).contiguous();
  for (int i = 0; i < 16; ++i) w.lut[static_cast<size_t>(i)] = static_cast<float>(i);
  const at::Tensor s = scales.to(at::kCPU).to(at::kFloat);  // [G, N]; fp16 -> fp32 is exact
  w.scale = s.t().contiguous();
  // z·s is exact in float32 (4-bit z, 11-bit s), so q·s + offset is (q - z)·s to one rounding.
  w.offset = (zeros_.to(at::kCPU).to(at::kFloat) * s).neg().t().contiguous();
  w.group_size = gs;
  if (permuted) w.input_permutation = perm;
  w.compute_dtype = options().dtype;
  w.activation_bits = options().activation_bits;
  auto packed = kernels::PackLut4(w, device);
  if (!packed.ok()) {
    return common::Annotate(packed.status(), absl::StrCat("packing ", name, " (", What(), ")"));
  }
  SetPackedWeight(std::move(*packed));
  codes_ = at::Tensor();
  // One resident copy: `qweight` is rebuilt from the kernel's codes (back in checkpoint row
  // order when they were sorted by group) when Save or Dequantize needs it.
  return common::TorchCall("gptq: dropping the serialized codes", [&] {
    const at::Tensor inverse = permuted ? at::argsort(perm) : at::Tensor();
    ReleaseToPacked(&qweight, [bits = gptq_.bits, inverse](const at::Tensor& codes) {
      const at::Tensor c = inverse.defined() ? codes.index_select(1, inverse) : codes;
      return GptqPackRows(c.t().to(at::kInt), bits);
    });
  });
}

at::Tensor GptqLinear::Codes() const {
  if (codes_.defined()) return codes_;
  const at::Tensor q = Resident(qweight);
  return GptqUnpackRows(q, gptq_.bits, options().in_features).to(q.device());
}

std::string GptqLinear::kernel_name() const {
  return packed_weight() != nullptr ? packed_weight()->name() : "dequantize_linear_gptq_ref";
}

absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> GptqLinear::SerializedTensors()
    const {
  std::vector<std::pair<std::string, at::Tensor>> out = {
      {"qweight", Resident(qweight)}, {"qzeros", qzeros}, {"scales", scales}};
  if (has_g_idx_) out.emplace_back("g_idx", g_idx);
  if (options().bias) out.emplace_back("bias", bias);
  return out;
}

at::Tensor GptqLinear::Dequantize() const {
  // [K, N]: fp16 scales times the integer difference, one fp16 rounding per element.
  const at::Tensor diff = Codes() - zeros_.index_select(0, groups_of_rows_);
  const at::Tensor w = scales.index_select(0, groups_of_rows_) * diff;
  return w.t().to(options().dtype).contiguous();
}

}  // namespace quantserve::quant
