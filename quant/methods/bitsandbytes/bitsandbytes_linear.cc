#include "quant/methods/bitsandbytes/bitsandbytes_linear.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/torch_status.h"
#include "quant/methods/bitsandbytes/bitsandbytes_config.h"
#include "common/json_nesting.h"

namespace quantserve::quant {
namespace bnb {
namespace {

// bnb's dequantization constants, as written in backends/default/ops.py and _ops.py. The
// product constant is not 1/127^2 (6.2000124e-05) but bnb's literal; kept to match its bits.
constexpr double kInt8DequantScale = 7.874015718698502e-3;
constexpr double kInt8MatmulDequantScale = 6.200124e-05;
constexpr int64_t kNestedBlocksize = 256;

// The 4-bit quantizer's decision points: midpoints of the code sorted ascending, and the
// permutation back to code indices. torch.argsort puts +0 (code 0) before -0 (code 8) for
// FP4, so (0, 0.0026] maps to code 8 ("-0") and (-0.0026, 0] to code 0; we keep that order.
struct FourBitBounds {
  at::Tensor midpoints;  // f32 [15]
  at::Tensor order;      // int64 [16]: sorted position -> code
};

FourBitBounds Bounds(FourBitType type) {
  static const std::array<int64_t, 16> kFp4Order = {11, 10, 13, 12, 15, 14, 9, 0,
                                                    8,  1,  6,  7,  4,  5,  2, 3};
  std::array<int64_t, 16> order{};
  for (int64_t i = 0; i < 16; ++i) order[i] = type == FourBitType::kNf4 ? i : kFp4Order[i];
  at::Tensor o = at::tensor(std::vector<int64_t>(order.begin(), order.end()), at::kLong);
  at::Tensor sorted = FourBitCode(type).index_select(0, o);
  at::Tensor mid = (sorted.slice(0, 0, 15) + sorted.slice(0, 1, 16)) / 2;
  return {mid, o};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> Int8VectorwiseQuant(const at::Tensor& a,
                                                                   double threshold) {
  at::Tensor x = a;
  const int64_t rows = a.numel() / a.size(-1);
  at::Tensor outlier_cols;
  if (threshold > 0.0) {
    at::Tensor outliers = x.abs() >= threshold;
    if (outliers.any().item<bool>()) {
      outlier_cols = at::argwhere(outliers.any(0)).view(-1);
      x = x.masked_fill(outliers, 0);
    } else {
      outlier_cols = at::empty({0}, a.options().dtype(at::kLong));
    }
  }
  at::Tensor row_stats = std::get<0>(at::max(x.abs(), 1)).to(at::kFloat);
  // Python's `127.0 / t` is t.reciprocal() * 127.0 (Tensor.__rdiv__), not a division.
  at::Tensor codes = at::round(x * (at::reciprocal(row_stats.unsqueeze(-1)) * 127.0)).to(at::kChar);
  if (rows > 1 && outlier_cols.defined()) codes.index_fill_(1, outlier_cols, 0);
  return {codes, row_stats, outlier_cols};
}

at::Tensor Int8VectorwiseDequant(const at::Tensor& codes, const at::Tensor& stats) {
  return codes * stats.view({-1, 1}) * kInt8DequantScale;
}

at::Tensor Int8ScaledMm(const at::Tensor& ca, const at::Tensor& cb, const at::Tensor& sca,
                        const at::Tensor& scb, const at::Tensor& bias, c10::ScalarType dtype) {
  at::Tensor acc = at::matmul(ca.to(at::kDouble), cb.to(at::kDouble).t()).to(at::kInt);
  at::Tensor out = acc.view({-1, acc.size(-1)}) *
                   (sca.reshape(-1).unsqueeze(-1) * scb.reshape(-1).unsqueeze(0)) *
                   kInt8MatmulDequantScale;
  if (bias.defined()) out += bias;
  return out.to(dtype);
}

at::Tensor Int8MixedMatmulRef(const at::Tensor& x, const at::Tensor& cb, const at::Tensor& scb,
                              const at::Tensor& bias, double threshold) {
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = cb.size(0);
  at::Tensor a = x.reshape({-1, x.size(-1)});
  auto [ca, sca, outlier_cols] = Int8VectorwiseQuant(a.to(at::kHalf), threshold);
  // Linear8bitLt casts its bias to the input dtype.
  at::Tensor b = bias.defined() ? bias.to(x.scalar_type()) : bias;
  at::Tensor out = Int8ScaledMm(ca, cb, sca, scb, b, a.scalar_type());
  if (threshold > 0.0 && outlier_cols.numel() > 0) {
    // The outlier columns in the input's own precision against the dequantized int8 weight
    // columns (not the original float weight).
    at::Tensor sub_a = a.index_select(1, outlier_cols).contiguous();
    at::Tensor sub_b = Int8VectorwiseDequant(cb.index_select(1, outlier_cols).contiguous(), scb)
                           .to(a.scalar_type())
                           .t();
    out = out.addmm(sub_a, sub_b);
  }
  return out.reshape(out_shape);
}

at::Tensor FourBitCode(FourBitType type) {
  if (type == FourBitType::kNf4) {
    return at::tensor(
        std::vector<float>{-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                           -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f,
                           0.0f, 0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f,
                           0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
                           0.7229568362236023f, 1.0f},
        at::kFloat);
  }
  // bnb lists the FP4 values unnormalized and divides by their absmax (12) in float32. Its
  // code 8 is Python's integer `-0`, i.e. +0.0.
  at::Tensor raw = at::tensor(std::vector<float>{0.f, 0.0625f, 8.f, 12.f, 4.f, 6.f, 2.f, 3.f, 0.f,
                                                 -0.0625f, -8.f, -12.f, -4.f, -6.f, -2.f, -3.f},
                              at::kFloat);
  return raw.div_(raw.abs().max());
}

at::Tensor FourBitCpuLut(FourBitType type) {
  at::Tensor lut = FourBitCode(type);
  // libbitsandbytes_cpu's fp4_lut writes code 8 as -0.0f (the values are otherwise the same
  // floats), so its dequantization gives -0 where the quant_map says +0.
  if (type == FourBitType::kFp4) lut[8] = -0.0f;
  return lut;
}

at::Tensor DynamicMap() {
  // create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for exponent i the
  // midpoints of linspace(0.1, 1, 2^i + 1) (float32) scaled by +-10^(i-6).
  static const std::array<double, 7> kScale = {1e-06, 1e-05, 1e-04, 1e-03, 1e-02, 1e-01, 1.0};
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    at::Tensor b = at::linspace(0.1, 1, (int64_t{1} << i) + 1, at::kFloat);
    at::Tensor means = (b.slice(0, 0, -1) + b.slice(0, 1)) / 2.0;
    for (double sign : {1.0, -1.0}) {
      at::Tensor v = (means * (sign * kScale[i])).contiguous();
      data.insert(data.end(), v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
    }
  }
  data.push_back(0.f);
  data.push_back(1.f);
  std::sort(data.begin(), data.end());
  return at::tensor(data, at::kFloat);
}

std::tuple<at::Tensor, at::Tensor> Quantize4bit(const at::Tensor& w, int64_t blocksize,
                                                FourBitType type) {
  const FourBitBounds bounds = Bounds(type);
  at::Tensor flat = w.reshape(-1).to(at::kFloat);
  const int64_t n = flat.numel();
  const int64_t rem = n % blocksize;
  const int64_t full = n - rem;
  at::Tensor com = flat.slice(0, 0, full).reshape({full / blocksize, blocksize});
  at::Tensor absmax = std::get<0>(com.abs().max(-1));
  // Python's `1.0 / t` is t.reciprocal() * 1.0.
  at::Tensor scaled =
      at::clamp(com * (at::reciprocal(at::clamp(absmax, 1e-38).view({-1, 1})) * 1.0), -1, 1)
          .reshape(-1);
  if (rem != 0) {
    at::Tensor tail = flat.slice(0, full);
    at::Tensor am = at::clamp(tail.abs().max(), 1e-38);
    absmax = at::cat({absmax, am.unsqueeze(0)});
    scaled = at::cat({scaled, at::clamp(tail / am, -1, 1)});
  }
  if (scaled.numel() % 2 != 0) scaled = at::constant_pad_nd(scaled, {0, 1}, 0);
  at::Tensor q = at::bucketize(scaled, bounds.midpoints, /*out_int32=*/true, /*right=*/false);
  if (type != FourBitType::kNf4) q = bounds.order.index_select(0, q);
  at::Tensor q8 = q.to(at::kByte);
  at::Tensor packed = at::bitwise_or(at::bitwise_left_shift(q8.slice(0, 0, q8.numel(), 2), 4),
                                     q8.slice(0, 1, q8.numel(), 2))
                          .unsqueeze(1);
  return {packed, absmax};
}

at::Tensor Dequantize4bit(const at::Tensor& packed_u8, const at::Tensor& absmax,
                          const at::Tensor& code, int64_t blocksize, at::IntArrayRef shape,
                          c10::ScalarType dtype) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  at::Tensor bytes = packed_u8.reshape(-1);
  at::Tensor q = at::stack({at::bitwise_right_shift(bytes, 4), at::bitwise_and(bytes, 0xF)}, 1)
                     .reshape(-1)
                     .to(at::kLong);
  at::Tensor vals = code.index_select(0, q).slice(0, 0, n);
  const int64_t rem = n % blocksize;
  const int64_t full = n - rem;
  const int64_t blocks = full / blocksize;
  at::Tensor out =
      (vals.slice(0, 0, full).view({-1, blocksize}) * absmax.slice(0, 0, blocks).view({-1, 1}))
          .reshape(full);
  if (rem != 0) out = at::cat({out, vals.slice(0, full) * absmax[blocks]});
  return out.reshape(shape).to(dtype);
}

std::tuple<at::Tensor, at::Tensor> QuantizeBlockwiseCpu(const at::Tensor& a, const at::Tensor& code,
                                                        int64_t blocksize) {
  constexpr int kCodes = 256;
  constexpr int kLutSize = 65536;
  at::Tensor x = a.to(at::kCPU, at::kFloat).contiguous().reshape(-1);
  at::Tensor c = code.to(at::kCPU, at::kFloat).contiguous();
  TORCH_CHECK(c.numel() == kCodes, "the blockwise code must have 256 entries, got ", c.numel());
  const float* cp = c.data_ptr<float>();
  // build_quantize_lut: bins of [-1, 1] -> index of the first midpoint not below the bin.
  std::array<float, kCodes - 1> mid{};
  for (int i = 0; i < kCodes - 1; ++i) mid[i] = (cp[i] + cp[i + 1]) * 0.5f;
  std::vector<uint8_t> lut(kLutSize);
  int idx = 0;
  for (int i = 0; i < kLutSize; ++i) {
    const float val = (2.0f * static_cast<float>(i)) / static_cast<float>(kLutSize - 1) - 1.0f;
    while (idx < kCodes - 1 && mid[idx] < val) ++idx;
    lut[i] = static_cast<uint8_t>(idx);
  }
  const int64_t n = x.numel();
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  at::Tensor q = at::empty({n}, at::kByte);
  at::Tensor absmax = at::empty({blocks}, at::kFloat);
  const float* xp = x.data_ptr<float>();
  uint8_t* qp = q.data_ptr<uint8_t>();
  float* ap = absmax.data_ptr<float>();
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * blocksize;
    const int64_t end = std::min(begin + blocksize, n);
    float m = 0.0f;
    for (int64_t i = begin; i < end; ++i) m = std::max(m, std::fabs(xp[i]));
    ap[b] = m;
    if (m == 0.0f) {
      std::fill(qp + begin, qp + end, 0);
      continue;
    }
    const float inv = 1.0f / m;
    for (int64_t i = begin; i < end; ++i) {
      const float v = std::clamp(xp[i] * inv, -1.0f, 1.0f);
      // norm_to_lut_index; libbitsandbytes_cpu.so fuses the last multiply-add (vfmadd213ss).
      const float pos = std::fma((v + 1.0f) * 0.5f, static_cast<float>(kLutSize - 1), 0.5f);
      qp[i] = lut[static_cast<uint16_t>(static_cast<int32_t>(pos))];
    }
  }
  return {q.view(a.sizes()), absmax};
}

at::Tensor DequantizeBlockwise(const at::Tensor& q, const at::Tensor& absmax,
                               const at::Tensor& code, int64_t blocksize) {
  const int64_t n = q.numel();
  at::Tensor vals = code.index_select(0, q.reshape(-1).to(at::kLong));
  return (vals * absmax.repeat_interleave(blocksize).slice(0, 0, n)).view(q.sizes());
}

absl::StatusOr<QuantStateJson> ParseQuantStateJson(const at::Tensor& bytes) {
  at::Tensor b = bytes.to(at::kCPU).contiguous();
  const auto* p = reinterpret_cast<const char*>(b.data_ptr<uint8_t>());
  if (common::JsonNesting(p, static_cast<size_t>(b.numel())) > common::kMaxJsonNesting) {
    return absl::DataLossError("it nests deeper than any quant state (bnb writes a flat object)");
  }
  const nlohmann::json j = nlohmann::json::parse(p, p + b.numel(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError("it is not a JSON object (bnb writes json.dumps of the quant state)");
  }
  static const char* const kKeys[] = {"quant_type", "blocksize",        "dtype",       "shape",
                                      "nested_blocksize", "nested_dtype", "nested_offset"};
  for (const auto& [key, value] : j.items()) {
    if (std::find_if(std::begin(kKeys), std::end(kKeys),
                     [&](const char* k) { return key == k; }) == std::end(kKeys)) {
      return absl::DataLossError(absl::StrCat("unknown key \"", key,
                                              "\" (QuantState.from_dict knows ",
                                              absl::StrJoin(kKeys, ", "), ")"));
    }
  }
  const auto need = [&](const char* key, bool ok, const char* what) -> absl::Status {
    if (!j.contains(key)) return absl::DataLossError(absl::StrCat("key \"", key, "\" is missing"));
    if (!ok) {
      return absl::DataLossError(
          absl::StrCat("key \"", key, "\" is ", j.at(key).dump(), ", not ", what));
    }
    return absl::OkStatus();
  };
  const auto dtype = [](const std::string& name) -> std::optional<c10::ScalarType> {
    for (auto t : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble}) {
      if (BnbDtypeName(t) == name) return t;
    }
    return std::nullopt;
  };
  QuantStateJson q;
  QS_RETURN_IF_ERROR(need("quant_type", j.contains("quant_type") && j["quant_type"].is_string() &&
                                            (j["quant_type"] == "nf4" || j["quant_type"] == "fp4"),
                          "\"nf4\" or \"fp4\""));
  q.quant_type = j["quant_type"] == "nf4" ? FourBitType::kNf4 : FourBitType::kFp4;
  QS_RETURN_IF_ERROR(need("blocksize",
                          j.contains("blocksize") && j["blocksize"].is_number_integer() &&
                              j["blocksize"].get<int64_t>() > 0,
                          "a positive integer"));
  q.blocksize = j["blocksize"].get<int64_t>();
  QS_RETURN_IF_ERROR(need("dtype",
                          j.contains("dtype") && j["dtype"].is_string() &&
                              dtype(j["dtype"].get<std::string>()).has_value(),
                          "a float dtype name (float32, bfloat16, float16, float64)"));
  q.dtype = *dtype(j["dtype"].get<std::string>());
  bool shape_ok = j.contains("shape") && j["shape"].is_array();
  if (shape_ok) {
    for (const auto& d : j["shape"]) shape_ok = shape_ok && d.is_number_integer() && d.get<int64_t>() >= 0;
  }
  QS_RETURN_IF_ERROR(need("shape", shape_ok, "a list of dimensions"));
  q.shape = j["shape"].get<std::vector<int64_t>>();
  const int nested_keys = static_cast<int>(j.contains("nested_blocksize")) +
                          static_cast<int>(j.contains("nested_dtype")) +
                          static_cast<int>(j.contains("nested_offset"));
  if (nested_keys != 0 && nested_keys != 3) {
    return absl::DataLossError(
        "it has only some of nested_blocksize, nested_dtype and nested_offset (double quant "
        "needs all three)");
  }
  q.nested = nested_keys == 3;
  if (q.nested) {
    QS_RETURN_IF_ERROR(need("nested_blocksize",
                            j["nested_blocksize"].is_number_integer() &&
                                j["nested_blocksize"].get<int64_t>() > 0,
                            "a positive integer"));
    q.nested_blocksize = j["nested_blocksize"].get<int64_t>();
    QS_RETURN_IF_ERROR(need("nested_dtype",
                            j["nested_dtype"].is_string() &&
                                dtype(j["nested_dtype"].get<std::string>()).has_value(),
                            "a float dtype name"));
    q.nested_dtype = *dtype(j["nested_dtype"].get<std::string>());
    QS_RETURN_IF_ERROR(need("nested_offset",
                            j["nested_offset"].is_number() &&
                                std::isfinite(j["nested_offset"].get<double>()),
                            "a finite number"));
    q.nested_offset = j["nested_offset"].get<double>();
  }
  return q;
}

std::string PythonFloatRepr(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  std::string s(buf, res.ptr);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s = s.substr(1);
  }
  const size_t e_pos = s.find('e');
  const int exp = std::stoi(s.substr(e_pos + 1));
  std::string digits = s.substr(0, e_pos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  if (exp < -4 || exp >= 16) {
    std::string mant = digits.substr(0, 1);
    if (digits.size() > 1) absl::StrAppend(&mant, ".", digits.substr(1));
    const std::string e = std::to_string(std::abs(exp));
    return absl::StrCat(sign, mant, "e", exp < 0 ? "-" : "+", e.size() < 2 ? "0" : "", e);
  }
  if (exp < 0) return absl::StrCat(sign, "0.", std::string(-exp - 1, '0'), digits);
  const size_t int_len = static_cast<size_t>(exp) + 1;
  if (digits.size() <= int_len) {
    return absl::StrCat(sign, digits, std::string(int_len - digits.size(), '0'), ".0");
  }
  return absl::StrCat(sign, digits.substr(0, int_len), ".", digits.substr(int_len));
}

}  // namespace bnb

// ---- Linear8bitLt ----

BnbLinear8bitLt::BnbLinear8bitLt(const models::LinearOptions& options, double threshold,
                                 bool has_fp16_weights, bool prequantized)
    : QuantizedLinear(options), threshold_(threshold), has_fp16_weights_(has_fp16_weights) {
  const bool int8_state = prequantized && !has_fp16_weights_;
  weight = models::MetaTensor({options.out_features, options.in_features},
                              int8_state ? at::kChar : options.dtype);
  RegisterParameter("weight", &weight);
  RegisterBias();
  if (has_fp16_weights_) return;
  SCB = models::MetaTensor({options.out_features}, at::kFloat);
  weight_format = models::MetaTensor({}, at::kByte);
  if (int8_state) {
    RegisterParameter("SCB", &SCB);
    RegisterParameter("weight_format", &weight_format);
    // maybe_rearrange_weight reads a missing weight_format as "row".
    MarkOptional("weight_format").IgnoreError();
  } else {
    RegisterDerivedParameter("SCB", &SCB);
    RegisterDerivedParameter("weight_format", &weight_format);
  }
}

absl::Status BnbLinear8bitLt::QuantizeWeight(const at::Tensor& w, const LoadTarget& target) {
  // transformers materializes the checkpoint tensor in the load dtype before quantizing.
  at::Tensor in_dtype = w.to(options().dtype).contiguous();
  if (has_fp16_weights_) {
    // `w` may be a view of the mapped checkpoint: keep a copy, not an alias.
    weight = w.to(at::TensorOptions().dtype(options().dtype).device(target.device),
                  /*non_blocking=*/false, /*copy=*/true);
    return absl::OkStatus();
  }
  // Int8Params._quantize: through fp16 first, then row-wise absmax codes.
  auto [cb, scb, cols] = bnb::Int8VectorwiseQuant(in_dtype.to(at::kHalf), 0.0);
  weight = cb.to(target.device);
  SCB = scb.to(target.device);
  weight_format = at::zeros({}, at::TensorOptions().dtype(at::kByte).device(target.device));
  return absl::OkStatus();
}

at::Tensor BnbLinear8bitLt::Dequantize() const {
  if (has_fp16_weights_) return weight.to(options().dtype);
  return bnb::Int8VectorwiseDequant(weight, SCB).to(options().dtype);
}

at::Tensor BnbLinear8bitLt::Forward(const at::Tensor& x) const {
  if (has_fp16_weights_) {
    // MatMul8bitLt re-quantizes the float weight (through fp16) on the forward.
    auto [cb, scb, cols] = bnb::Int8VectorwiseQuant(weight.to(at::kHalf), 0.0);
    return bnb::Int8MixedMatmulRef(x, cb, scb, bias, threshold_);
  }
  return bnb::Int8MixedMatmulRef(x, weight, SCB, bias, threshold_);
}

absl::Status BnbLinear8bitLt::LoadSerializedTensor(const std::string& local,
                                                   const std::string& full_name,
                                                   const at::Tensor& value,
                                                   const LoadTarget& target) {
  if (has_fp16_weights_) {
    return QuantizedLinear::LoadSerializedTensor(local, full_name, value, target);
  }
  const int64_t n = options().out_features;
  const int64_t k = options().in_features;
  const std::string what = absl::StrCat("bitsandbytes 8-bit (Linear8bitLt ", n, "x", k, ")");
  const auto store = [&](at::Tensor& slot) {
    slot = value.to(at::TensorOptions().device(target.device), /*non_blocking=*/false,
                    /*copy=*/true);
    return absl::OkStatus();
  };
  if (local == "weight") {
    if (value.scalar_type() != at::kChar) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", full_name, "' is ", c10::toString(value.scalar_type()), " [",
          absl::StrJoin(value.sizes(), ", "), "] but a bitsandbytes 8-bit checkpoint (with SCB) "
          "stores the int8 row-wise codes there: ", what, " expects Char [", n, ", ", k,
          "] (a float weight with llm_int8_has_fp16_weight has no SCB)"));
    }
    QS_RETURN_IF_ERROR(ExpectTensor(full_name, value, {n, k}, at::kChar, what));
    return store(weight);
  }
  if (local == "SCB") {
    QS_RETURN_IF_ERROR(ExpectTensor(full_name, value, {n}, at::kFloat, what));
    return store(SCB);
  }
  if (local == "weight_format") {
    QS_RETURN_IF_ERROR(ExpectTensor(full_name, value, {}, at::kByte, what));
    const int format = value.item<uint8_t>();
    if (format != 0) {
      static const char* const kNames[] = {"row", "col32", "col_turing", "col_ampere"};
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", full_name, "' is ", format,
          format < 4 ? absl::StrCat(" (\"", kNames[format], "\")") : std::string(" (unknown)"),
          ": only weight_format 0 (\"row\") is supported; the col32/col_turing/col_ampere "
          "layouts of bitsandbytes < 0.45 checkpoints are tiled for old CUDA kernels. Load the "
          "checkpoint with that bitsandbytes on a GPU and save it again, or quantize the "
          "unquantized model at load"));
    }
    return store(weight_format);
  }
  return QuantizedLinear::LoadSerializedTensor(local, full_name, value, target);
}

absl::Status BnbLinear8bitLt::FinishSerializedLoad(const std::string& name,
                                                   const LoadTarget& target) {
  if (has_fp16_weights_) return absl::OkStatus();
  if (!weight_format.defined() || weight_format.is_meta()) {
    weight_format = at::zeros({}, at::TensorOptions().dtype(at::kByte).device(target.device));
  }
  at::Tensor bad = at::logical_not(at::isfinite(SCB) & (SCB >= 0));
  if (bad.any().item<bool>()) {
    const int64_t row = at::argwhere(bad.reshape(-1))[0][0].item<int64_t>();
    return absl::DataLossError(absl::StrCat(
        "tensor '", name, ".SCB' holds ", bnb::PythonFloatRepr(SCB[row].item<double>()),
        " at row ", row, "; SCB is the row's absmax (finite, >= 0)"));
  }
  return absl::OkStatus();
}

// ---- Linear4bit ----

BnbLinear4bit::BnbLinear4bit(const models::LinearOptions& options,
                             const BnbLinear4bitOptions& bnb_options)
    : QuantizedLinear(options), bnb_options_(bnb_options), weight_dtype_(options.dtype) {
  const int64_t numel = options.out_features * options.in_features;
  const int64_t blocks = (numel + bnb_options.blocksize - 1) / bnb_options.blocksize;
  const bool pre = bnb_options.prequantized;
  // Pre-quantized: the packed codes in the storage dtype; the absmax lengths assume the
  // default blocksize until the quant_state JSON gives the real one.
  const int64_t itemsize = static_cast<int64_t>(c10::elementSize(bnb_options.quant_storage));
  weight = pre ? models::MetaTensor({(numel + 1) / 2 / itemsize, 1}, bnb_options.quant_storage)
               : models::MetaTensor({options.out_features, options.in_features}, options.dtype);
  RegisterParameter("weight", &weight);
  RegisterBias();
  const auto add = [&](const std::string& name, at::Tensor* t) {
    if (pre) {
      RegisterParameter(name, t);
    } else {
      RegisterDerivedParameter(name, t);
    }
  };
  absmax = models::MetaTensor({blocks}, bnb_options.double_quant ? at::kByte : at::kFloat);
  quant_map = models::MetaTensor({16}, at::kFloat);
  add("weight.absmax", &absmax);
  add("weight.quant_map", &quant_map);
  if (bnb_options.double_quant) {
    nested_absmax = models::MetaTensor({(blocks + 255) / 256}, at::kFloat);
    nested_quant_map = models::MetaTensor({256}, at::kFloat);
    add("weight.nested_absmax", &nested_absmax);
    add("weight.nested_quant_map", &nested_quant_map);
  }
  // The JSON's length is only known once quantized (or read).
  quant_state = models::MetaTensor({0}, at::kByte);
  add(QuantStateKey(), &quant_state);
}

std::string BnbLinear4bit::QuantStateKey() const {
  return std::string("weight.quant_state.bitsandbytes__") +
         (bnb_options_.quant_type == bnb::FourBitType::kNf4 ? "nf4" : "fp4");
}

std::string BnbLinear4bit::kernel_name() const {
  if (packed_weight() != nullptr) return packed_weight()->name();
  const bool a32 = bnb_options_.compute_dtype == at::kFloat;
  return absl::StrCat("gemm_w4a", a32 ? "32" : "16", "_",
                      bnb_options_.quant_type == bnb::FourBitType::kNf4 ? "nf4" : "fp4", "_ref");
}

absl::Status BnbLinear4bit::QuantizeWeight(const at::Tensor& w, const LoadTarget& target) {
  // transformers materializes the checkpoint tensor in the load dtype; bnb records that dtype.
  at::Tensor in_dtype = w.to(options().dtype).contiguous();
  const c10::ScalarType storage = bnb_options_.quant_storage;
  const int64_t itemsize = static_cast<int64_t>(c10::elementSize(storage));
  const int64_t bytes = (in_dtype.numel() + 1) / 2;
  if (bytes % itemsize != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bnb_4bit_quant_storage ", BnbDtypeName(storage), " needs the packed byte count (",
        in_dtype.numel(), " + 1) / 2 = ", bytes, " to be a multiple of ", itemsize,
        " (bitsandbytes views the packed bytes as that dtype)"));
  }
  auto [packed, am] = bnb::Quantize4bit(in_dtype, bnb_options_.blocksize, bnb_options_.quant_type);
  std::string json = absl::StrCat("{\"quant_type\": \"",
                                  bnb_options_.quant_type == bnb::FourBitType::kNf4 ? "nf4" : "fp4",
                                  "\", \"blocksize\": ", bnb_options_.blocksize, ", \"dtype\": \"",
                                  BnbDtypeName(in_dtype.scalar_type()), "\", \"shape\": [",
                                  absl::StrJoin(in_dtype.sizes(), ", "), "]");
  if (bnb_options_.double_quant) {
    // quantize_4bit(compress_statistics=True): offset = mean(absmax), then the centred
    // absmax in 256-blocks with the signed dynamic map (bnb's CPU LUT quantizer).
    at::Tensor offset = am.mean();
    at::Tensor code = bnb::DynamicMap();
    auto [qabsmax, nabsmax] = bnb::QuantizeBlockwiseCpu(am - offset, code, bnb::kNestedBlocksize);
    nested_offset_ = offset.item<float>();
    nested_absmax = nabsmax.to(target.device);
    nested_quant_map = code.to(target.device);
    am = qabsmax;
    absl::StrAppend(&json, ", \"nested_blocksize\": ", bnb::kNestedBlocksize,
                    ", \"nested_dtype\": \"float32\", \"nested_offset\": ",
                    bnb::PythonFloatRepr(static_cast<double>(nested_offset_)));
  }
  absl::StrAppend(&json, "}");
  if (storage != at::kByte) packed = packed.reshape(-1).view(storage).unsqueeze(1);
  weight_dtype_ = in_dtype.scalar_type();
  weight = packed.to(target.device);
  absmax = am.to(target.device);
  quant_map = bnb::FourBitCode(bnb_options_.quant_type).to(target.device);
  dequant_lut_ = bnb::FourBitCpuLut(bnb_options_.quant_type).to(target.device);
  quant_state =
      at::tensor(std::vector<uint8_t>(json.begin(), json.end()), at::kByte).to(target.device);
  return PackForKernels(target);
}

absl::Status BnbLinear4bit::PackForKernels(const LoadTarget& target) {
  const int64_t n = options().out_features;
  const int64_t k = options().in_features;
  const int64_t block = bnb_options_.blocksize;
  if (!KernelsEnabled() || !target.device.is_cpu() || k % block != 0) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<kernels::PackedWeight>> packed;
  QS_RETURN_IF_ERROR(common::TorchCall("bitsandbytes 4-bit: packing for the CPU kernel", [&] {
    // Flattened codes, high nibble first; blocks of the flattened weight are row groups here.
    const at::Tensor bytes = weight.view(at::kByte).reshape(-1);
    const at::Tensor codes =
        at::stack({at::bitwise_right_shift(bytes, 4), at::bitwise_and(bytes, 0xF)}, 1)
            .reshape(-1)
            .slice(0, 0, n * k);
    kernels::Lut4Weight w;
    w.codes = codes.view({n, k}).contiguous();
    const at::Tensor lut = dequant_lut_.to(at::kCPU, at::kFloat).contiguous();
    for (int i = 0; i < 16; ++i) w.lut[i] = lut.data_ptr<float>()[i];
    w.scale = BlockAbsmax().to(at::kFloat).reshape({n, k / block}).contiguous();
    w.group_size = block;
    w.compute_dtype = options().dtype;
    w.activation_bits = options().activation_bits;
    packed = kernels::PackLut4(w, target.device);
  }));
  if (!packed.ok()) return packed.status();
  SetPackedWeight(*std::move(packed));
  // The packed weight holds the codes: `weight` is rebuilt from it when Save or Dequantize
  // needs it (two codes per byte, high nibble first, in the storage dtype's shape).
  return common::TorchCall("bitsandbytes 4-bit: dropping the serialized codes", [&] {
    ReleaseToPacked(&weight, [sizes = weight.sizes().vec(), dtype = weight.scalar_type()](
                                 const at::Tensor& codes) {
      at::Tensor flat = codes.reshape(-1);
      if (flat.numel() % 2 != 0) flat = at::constant_pad_nd(flat, {0, 1}, 0);
      const at::Tensor pairs = flat.view({-1, 2});
      const at::Tensor bytes =
          at::bitwise_or(at::bitwise_left_shift(pairs.select(1, 0), 4), pairs.select(1, 1));
      return bytes.contiguous().view(dtype).reshape(sizes);
    });
  });
}

absl::Status BnbLinear4bit::LoadSerializedTensor(const std::string& local,
                                                 const std::string& full_name,
                                                 const at::Tensor& value,
                                                 const LoadTarget& target) {
  if (!bnb_options_.prequantized) {
    return QuantizedLinear::LoadSerializedTensor(local, full_name, value, target);
  }
  const int64_t n = options().out_features;
  const int64_t k = options().in_features;
  const char* type = bnb_options_.quant_type == bnb::FourBitType::kNf4 ? "nf4" : "fp4";
  const std::string what =
      absl::StrCat("bitsandbytes 4-bit ", type, bnb_options_.double_quant ? " double quant" : "",
                   ", quant_storage ", BnbDtypeName(bnb_options_.quant_storage), ", for a [", n,
                   ", ", k, "] weight,");
  const auto store = [&](at::Tensor& slot) {
    slot = value.to(at::TensorOptions().device(target.device), /*non_blocking=*/false,
                    /*copy=*/true);
    return absl::OkStatus();
  };
  const auto vector = [&](c10::ScalarType dtype) -> absl::Status {
    if (value.dim() != 1 || value.scalar_type() != dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", full_name, "' is ", c10::toString(value.scalar_type()), " [",
          absl::StrJoin(value.sizes(), ", "), "] but ", what, " expects a 1-D ",
          c10::toString(dtype), " tensor"));
    }
    return absl::OkStatus();
  };
  if (local == "weight") {
    const int64_t itemsize = static_cast<int64_t>(c10::elementSize(bnb_options_.quant_storage));
    const int64_t bytes = (n * k + 1) / 2;
    if (bytes % itemsize != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", full_name, "': ", bytes, " packed bytes do not divide into ",
          BnbDtypeName(bnb_options_.quant_storage), " elements (bnb_4bit_quant_storage)"));
    }
    QS_RETURN_IF_ERROR(
        ExpectTensor(full_name, value, {bytes / itemsize, 1}, bnb_options_.quant_storage, what));
    return store(weight);
  }
  if (local == "weight.absmax") {
    QS_RETURN_IF_ERROR(vector(bnb_options_.double_quant ? at::kByte : at::kFloat));
    return store(absmax);
  }
  if (local == "weight.quant_map") {
    QS_RETURN_IF_ERROR(ExpectTensor(full_name, value, {16}, at::kFloat, what));
    return store(quant_map);
  }
  if (bnb_options_.double_quant && local == "weight.nested_absmax") {
    QS_RETURN_IF_ERROR(vector(at::kFloat));
    return store(nested_absmax);
  }
  if (bnb_options_.double_quant && local == "weight.nested_quant_map") {
    QS_RETURN_IF_ERROR(ExpectTensor(full_name, value, {256}, at::kFloat, what));
    return store(nested_quant_map);
  }
  if (local == QuantStateKey()) {
    QS_RETURN_IF_ERROR(vector(at::kByte));
    auto parsed = bnb::ParseQuantStateJson(value);
    if (!parsed.ok()) {
      return absl::DataLossError(absl::StrCat("tensor '", full_name,
                                              "' does not hold bitsandbytes' quant_state JSON: ",
                                              parsed.status().message()));
    }
    loaded_state_ = *parsed;
    return store(quant_state);
  }
  return QuantizedLinear::LoadSerializedTensor(local, full_name, value, target);
}

absl::Status BnbLinear4bit::FinishSerializedLoad(const std::string& name,
                                                 const LoadTarget& target) {
  if (!bnb_options_.prequantized) return absl::OkStatus();
  const std::string qs_name = absl::StrCat(name, ".", QuantStateKey());
  if (!loaded_state_.has_value()) {
    return absl::InternalError(absl::StrCat("tensor '", qs_name, "' was not loaded"));
  }
  const bnb::QuantStateJson& qs = *loaded_state_;
  const int64_t n = options().out_features;
  const int64_t k = options().in_features;
  const auto type_name = [](bnb::FourBitType t) { return t == bnb::FourBitType::kNf4 ? "nf4" : "fp4"; };
  if (qs.quant_type != bnb_options_.quant_type) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", qs_name, "' says quant_type \"", type_name(qs.quant_type),
        "\" but its key and quantization_config.bnb_4bit_quant_type say \"",
        type_name(bnb_options_.quant_type), "\""));
  }
  if (qs.shape != std::vector<int64_t>{n, k}) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", qs_name, "' says shape [",
                                                   absl::StrJoin(qs.shape, ", "), "] but ",
                                                   name, " is [", n, ", ", k, "]"));
  }
  static const std::vector<int64_t> kBlocksizes = {32, 64, 128, 256, 512, 1024, 2048, 4096};
  const auto valid_blocksize = [&](int64_t b) {
    return std::find(kBlocksizes.begin(), kBlocksizes.end(), b) != kBlocksizes.end();
  };
  if (!valid_blocksize(qs.blocksize)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", qs_name, "' says blocksize ", qs.blocksize, "; bitsandbytes supports ",
        absl::StrJoin(kBlocksizes, ", ")));
  }
  if (qs.nested != bnb_options_.double_quant) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", qs_name, "' ", qs.nested ? "describes" : "does not describe",
        " double quantization (nested_* keys) but quantization_config.bnb_4bit_use_double_quant "
        "is ", bnb_options_.double_quant ? "true" : "false"));
  }
  const int64_t blocks = (n * k + qs.blocksize - 1) / qs.blocksize;
  if (absmax.size(0) != blocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, ".weight.absmax' has ", absmax.size(0), " entries but blocksize ",
        qs.blocksize, " (from '", qs_name, "') over ", n, "x", k, " weights needs ", blocks));
  }
  const auto first_bad = [](const at::Tensor& t, const at::Tensor& bad) {
    const int64_t i = at::argwhere(bad.reshape(-1))[0][0].item<int64_t>();
    return std::make_pair(i, t.reshape(-1)[i].item<double>());
  };
  if (qs.nested) {
    if (!valid_blocksize(qs.nested_blocksize) || qs.nested_dtype != at::kFloat) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", qs_name, "' says nested_blocksize ", qs.nested_blocksize,
          " and nested_dtype ", BnbDtypeName(qs.nested_dtype),
          "; bitsandbytes double quant uses a supported blocksize and float32"));
    }
    const int64_t nested_blocks = (blocks + qs.nested_blocksize - 1) / qs.nested_blocksize;
    if (nested_absmax.size(0) != nested_blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", name, ".weight.nested_absmax' has ", nested_absmax.size(0),
          " entries but ", blocks, " absmax codes in nested blocks of ", qs.nested_blocksize,
          " need ", nested_blocks));
    }
    at::Tensor bad = at::logical_not(at::isfinite(nested_absmax));
    if (bad.any().item<bool>()) {
      auto [i, v] = first_bad(nested_absmax, bad);
      return absl::DataLossError(absl::StrCat("tensor '", name, ".weight.nested_absmax' holds ",
                                              bnb::PythonFloatRepr(v), " at ", i));
    }
    bad = at::logical_not(at::isfinite(nested_quant_map));
    if (bad.any().item<bool>()) {
      auto [i, v] = first_bad(nested_quant_map, bad);
      return absl::DataLossError(absl::StrCat("tensor '", name, ".weight.nested_quant_map' holds ",
                                              bnb::PythonFloatRepr(v), " at ", i));
    }
    nested_blocksize_ = qs.nested_blocksize;
    // QuantState.from_dict: torch.tensor(float(nested_offset)), i.e. float32.
    nested_offset_ = static_cast<float>(qs.nested_offset);
  } else {
    at::Tensor bad = at::logical_not(at::isfinite(absmax) & (absmax >= 0));
    if (bad.any().item<bool>()) {
      auto [i, v] = first_bad(absmax, bad);
      return absl::DataLossError(absl::StrCat("tensor '", name, ".weight.absmax' holds ",
                                              bnb::PythonFloatRepr(v), " at block ", i,
                                              " (a block absmax is finite and >= 0)"));
    }
  }
  // bnb's 4-bit kernels (CPU and CUDA) dequantize with built-in tables, not the file's
  // quant_map: one that differs means the file is damaged (-0 and +0 compare equal).
  at::Tensor table = bnb::FourBitCode(bnb_options_.quant_type).to(quant_map.device());
  if (!at::equal(quant_map, table) && !(quant_map == table).all().item<bool>()) {
    const int64_t i = at::argwhere(quant_map != table)[0][0].item<int64_t>();
    return absl::DataLossError(absl::StrCat(
        "tensor '", name, ".weight.quant_map' holds ", bnb::PythonFloatRepr(quant_map[i].item<double>()),
        " for code ", i, " but bitsandbytes' ", type_name(qs.quant_type), " table has ",
        bnb::PythonFloatRepr(table[i].item<double>())));
  }
  bnb_options_.blocksize = qs.blocksize;
  weight_dtype_ = qs.dtype;
  dequant_lut_ = bnb::FourBitCpuLut(bnb_options_.quant_type).to(target.device);
  return PackForKernels(target);
}

at::Tensor BnbLinear4bit::BlockAbsmax() const {
  if (!bnb_options_.double_quant) return absmax;
  return bnb::DequantizeBlockwise(absmax, nested_absmax, nested_quant_map, nested_blocksize_) +
         at::scalar_tensor(nested_offset_, absmax.options().dtype(at::kFloat));
}

at::Tensor BnbLinear4bit::DequantizeTo(c10::ScalarType dtype) const {
  return bnb::Dequantize4bit(Resident(weight).view(at::kByte), BlockAbsmax(), dequant_lut_,
                             bnb_options_.blocksize,
                             {options().out_features, options().in_features}, dtype);
}

at::Tensor BnbLinear4bit::Dequantize() const { return DequantizeTo(weight_dtype_); }

at::Tensor BnbLinear4bit::Forward(const at::Tensor& x) const {
  // Linear4bit.forward: input and bias to compute_dtype, gemm_4bit (dequantize to the input's
  // dtype, F.linear), output back to the input dtype.
  const c10::ScalarType compute = bnb_options_.compute_dtype;
  at::Tensor xc = x.to(compute);
  if (packed_weight() != nullptr) {
    at::Tensor y = packed_weight()->Matmul(xc);
    if (bias.defined()) y = y + bias.to(compute);
    return y.to(x.scalar_type());
  }
  std::optional<at::Tensor> b;
  if (bias.defined()) b = bias.to(compute);
  return at::linear(xc, DequantizeTo(compute), b).to(x.scalar_type());
}

}  // namespace quantserve::quant
