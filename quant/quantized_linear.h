#pragma once
// QuantizedLinear: the part every method's Linear module shares.
//
// A method's module registers its state under the checkpoint names of its serialized layout
// (bnb: weight/SCB/weight_format; HQQ: W_q/scale/zero; ...). Names produced from the float
// weight are registered as derived parameters, so an unquantized checkpoint only has to
// provide `weight` (and `bias`), which the quantizer hands to QuantizeWeight. The weight slot
// starts as a float [out, in] meta tensor and ends holding the packed codes.
//
// Pre-quantized checkpoints (LoadTarget::checkpoint_is_prequantized at construction): the
// module registers exactly the tensors of its serialized layout as ordinary parameters (no
// float `weight` input slot, no aliases); optional ones are marked with MarkOptional. Each
// checkpoint tensor of the module goes through LoadSerializedTensor, then, once all are in,
// FinishSerializedLoad cross-checks and repacks. SerializedTensors is the inverse, for
// SaveModel: load(save(m)) reproduces m bit for bit.
//
// Fast kernels: a method describes its weight in a canonical form once at load (end of
// QuantizeWeight / FinishSerializedLoad) and installs the result of kernels::PackLut4 /
// PackInt8Rowwise with SetPackedWeight; the default Forward then runs packed->Matmul and
// kernel_name() names that kernel. The packed copy is runtime state (never saved, counted in
// runtime_bytes()), and where it holds the codes the method drops its own serialized copy
// (ReleaseToPacked), so each weight is resident once. Environment: QS_KERNELS=ref (read once
// per process) makes KernelsEnabled() false, so no method packs and every forward takes the
// dequantize reference path (A/B comparisons, debugging).

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/layers.h"
#include "quant/kernels/packed_weight.h"
#include "quant/quantizer.h"

namespace quantserve::quant {

class QuantizedLinear : public models::Linear {
 public:
  using models::Linear::Linear;

  // Quantizes the float checkpoint weight [out, in] (CPU, checkpoint dtype) into this module's
  // state on `target.device`. INVALID_ARGUMENT for a shape the method cannot take.
  virtual absl::Status QuantizeWeight(const at::Tensor& weight, const LoadTarget& target) = 0;

  // The weight back in floating point, [out, in], in the module's compute dtype: the reference
  // every kernel is tested against, and transformers' `dequantize()`.
  virtual at::Tensor Dequantize() const = 0;

  // packed_weight()->Matmul(x) + bias when a packed weight is set, else the reference
  // forward x @ Dequantize()^T + bias; bias is added in x's dtype. Methods with their own
  // arithmetic (LLM.int8 outliers, FP8 activations) override it.
  at::Tensor Forward(const at::Tensor& x) const override;
  // The packed kernel's name, else "dequantize_linear_ref".
  std::string kernel_name() const override;
  // The weight repacked for a fast kernel, or null (reference path).
  const kernels::PackedWeight* packed_weight() const { return packed_.get(); }
  // What DirectPackedWeight returns in a method whose Forward is exactly packed->Matmul(x)
  // (+ bias): each method opts in itself, as only it knows its Forward.
  const kernels::PackedWeight* PackedWithoutBias() const {
    return bias.defined() ? nullptr : packed_.get();
  }
  // False when the environment says QS_KERNELS=ref: methods then do not pack.
  static bool KernelsEnabled();

  // Every registered tensor (packed codes, scales, zeros, bias), like transformers'
  // get_memory_footprint over the module's parameters and buffers, plus the runtime tensors.
  int64_t memory_footprint_bytes() const override;
  // Bytes of the runtime tensors alone (RegisterRuntimeTensor) and of the packed weight, which
  // NamedParameters() does not show: the loader adds them to the model's footprint.
  int64_t runtime_bytes() const;

  // Stores checkpoint tensor `local` of this module ("qweight", "weight.absmax", "bias"; the
  // full checkpoint name is `full_name`, for messages). `value` is on CPU in the checkpoint
  // dtype, may view the read-only mapped file and is valid only during the call (copy what
  // is kept). The default stores it in the registered parameter `local` after checking it
  // against the skeleton: INVALID_ARGUMENT naming `full_name` when the shape differs or the
  // dtype differs (a float tensor converts to a float skeleton's dtype, as transformers'
  // load_state_dict copy does); a module whose tensor shapes are not known in advance
  // overrides this.
  virtual absl::Status LoadSerializedTensor(const std::string& local, const std::string& full_name,
                                            const at::Tensor& value, const LoadTarget& target);
  // After every tensor of the module arrived: DATA_LOSS naming the tensor when contents are
  // inconsistent (an index out of range, metadata that contradicts shapes), then any repacking
  // for the kernels. `name` is the module's dotted name. Default: nothing to check.
  virtual absl::Status FinishSerializedLoad(const std::string& name, const LoadTarget& target) {
    return absl::OkStatus();
  }
  // The module's tensors in its method's serialized layout, by local name (what
  // LoadSerializedTensor accepts), on any device. Default: every registered parameter.
  virtual absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> SerializedTensors() const;

  // Registered tensors whose memory ReleaseToPacked dropped (meta tensors now): the loader
  // neither counts their bytes nor reports them as missing.
  bool IsReleased(const at::Tensor* slot) const;
  // `slot` (a member of this module), or what ReleaseToPacked dropped from it, rebuilt on the
  // CPU: read a module's serialized tensors through this.
  at::Tensor Resident(const at::Tensor& slot) const;
  // Their bytes as they were resident, for reports.
  int64_t released_bytes() const;

  at::Tensor bias;  // registered by the subclass when options().bias

 protected:
  // Registers `bias` as [out] in the compute dtype when options().bias.
  void RegisterBias();
  // A tensor the forward keeps besides the serialized state (codes unpacked at load, decoded
  // indices): never saved, but counted in memory_footprint_bytes, so the footprint is what
  // the module really holds. `tensor` is a member of this module.
  void RegisterRuntimeTensor(const at::Tensor* tensor) { runtime_.push_back(tensor); }
  // Installs (or, with null, removes) the packed weight the default Forward uses. Call it only
  // during load, before the module is shared between threads.
  // Tensors released to the old packed weight are rebuilt first.
  void SetPackedWeight(std::unique_ptr<kernels::PackedWeight> packed);
  // One resident copy of the codes. Once the packed weight holds the codes (its Codes()), a
  // method drops its own serialized copy `*slot` (a member registered as a parameter): the
  // slot becomes a meta tensor of the same shape and dtype, and Resident(*slot) rebuilds the
  // real tensor on demand as rebuild(packed codes), for SaveModel and Dequantize. The rebuild
  // is compared with `*slot` bit for bit before anything is dropped; when it differs, or the
  // packed weight keeps no codes, `*slot` stays and this returns false, so a wrong rebuild
  // costs memory, never correctness. `aliases` are other members holding the same tensor (a
  // float input slot bound to the codes): they are released with it, their bytes counted once.
  // Call it only during load, after SetPackedWeight.
  using CodesRebuild = std::function<at::Tensor(const at::Tensor& codes)>;
  bool ReleaseToPacked(at::Tensor* slot, CodesRebuild rebuild,
                       const std::vector<at::Tensor*>& aliases = {});
  // INVALID_ARGUMENT naming `full_name` unless `value` has exactly `shape` and `dtype`;
  // `what` says which layout expects it ("gptq 4-bit, group_size 128").
  static absl::Status ExpectTensor(const std::string& full_name, const at::Tensor& value,
                                   at::IntArrayRef shape, c10::ScalarType dtype,
                                   const std::string& what);

 private:
  struct Released {
    at::Tensor* slot;
    CodesRebuild rebuild;
    int64_t bytes;
  };
  std::vector<const at::Tensor*> runtime_;
  std::unique_ptr<kernels::PackedWeight> packed_;
  std::vector<Released> released_;
};

// Every registered tensor of `root` by dotted name (NamedParameters order, tied ones too), with
// codes a module released to its packed weight rebuilt: the state as a checkpoint holds it.
std::vector<std::pair<std::string, at::Tensor>> ResidentParameters(const models::Module& root);

}  // namespace quantserve::quant
