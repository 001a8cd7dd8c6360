#pragma once
// A minimal module tree over ATen tensors, named exactly like the HF checkpoint keys.
//
// Why not torch::nn::Module: the load pipeline builds every model on the meta device and then
// rebinds each parameter to a materialized (possibly quantized) tensor as it streams in.
// torch::nn::Module keeps parameters in an OrderedDict that refuses re-registration and
// `set_data` refuses meta -> CPU, and its headers double the compile time of every model TU.
//
// A `Module` registers parameters (as pointers to its own `at::Tensor` members) and child
// modules under their HF names; `NamedParameters()` walks the tree and yields dotted names
// ("model.layers.0.self_attn.q_proj.weight") with a slot the loader fills.
//
// Thread-safety: the tree is built and loaded on one thread; afterwards forward passes only
// read it and may run concurrently.

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace quantserve::models {

// One loadable tensor of a module: its expected shape/dtype on the skeleton and where to store
// the materialized value. Every slot must come from the checkpoint unless it is tied.
struct ParamSlot {
  at::Tensor* tensor = nullptr;  // points into the owning module
  // Set for parameters that are not loaded but aliased to another one after loading
  // (tie_word_embeddings): the dotted name of the source parameter.
  std::string tied_to;
  // Quantization state (scales, zeros, packed codes) that a quantizer derives from the
  // module's float `weight` when it quantizes at load: expected only in a pre-quantized
  // checkpoint (transformers' update_missing_keys).
  bool derived = false;
  // A tensor a pre-quantized checkpoint may leave out (GPTQ `g_idx`, ...): not reported
  // missing; the owning module fills a default after loading.
  bool optional = false;
};

class Module {
 public:
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  struct NamedSlot {
    std::string name;
    ParamSlot slot;
  };
  // Every parameter in the tree, depth-first in registration order, with dotted names.
  std::vector<NamedSlot> NamedParameters(const std::string& prefix = "") const;

  struct NamedModule {
    std::string name;
    Module* module;
  };
  // Every module in the tree (this one first, named `prefix`).
  std::vector<NamedModule> NamedModules(const std::string& prefix = "");

  // Replaces the direct child registered as `name` with `child`; the holder passed at
  // registration is updated so the parent's forward uses the new module. NOT_FOUND for an
  // unknown name, INVALID_ARGUMENT when `child` is not of the holder's type.
  absl::Status ReplaceChild(const std::string& name, std::shared_ptr<Module> child);

  // Marks this module's parameter `param` as an alias of the tree parameter `source` (dotted
  // name from the root): the loader does not expect it and binds it after loading.
  absl::Status MarkTied(const std::string& param, std::string source);

  virtual const char* type_name() const = 0;

 protected:
  void RegisterParameter(std::string name, at::Tensor* tensor, std::string tied_to = "");
  // A parameter the quantizer fills from the float weight when quantizing at load (ParamSlot::derived).
  void RegisterDerivedParameter(std::string name, at::Tensor* tensor);
  // Drops parameter `name` of this module from NamedParameters(): a quantized module's float
  // `weight` once its state lives under other names (quanto's weight._data, ...). The loader
  // may still hold the slot while the tensor streams in. NOT_FOUND for an unknown name.
  absl::Status UnregisterParameter(const std::string& name);
  // Marks parameter `name` of this module optional in a checkpoint (ParamSlot::optional).
  // NOT_FOUND for an unknown name.
  absl::Status MarkOptional(const std::string& name);
  // `holder` is the parent's member that owns the child; ReplaceChild writes through it.
  template <typename T>
  void RegisterModule(std::string name, std::shared_ptr<T>* holder) {
    children_.push_back(
        {std::move(name), *holder, [holder](std::shared_ptr<Module> m) {
           auto typed = std::dynamic_pointer_cast<T>(m);
           if (typed == nullptr) return false;
           *holder = std::move(typed);  // (testing `typed` after this move read it as null)
           return true;
         }});
  }

 private:
  struct Child {
    std::string name;
    std::shared_ptr<Module> module;
    std::function<bool(std::shared_ptr<Module>)> rebind;
  };
  std::vector<std::pair<std::string, ParamSlot>> params_;
  std::vector<Child> children_;
};

}  // namespace quantserve::models
