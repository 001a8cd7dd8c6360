#include "models/module.h"


namespace quantserve::models {

void Module::RegisterParameter(std::string name, at::Tensor* tensor, std::string tied_to) {
  params_.push_back({std::move(name), ParamSlot{tensor, std::move(tied_to)}});
}

void Module::RegisterDerivedParameter(std::string name, at::Tensor* tensor) {
  params_.push_back({std::move(name), ParamSlot{tensor, "", /*derived=*/true}});
}

std::vector<Module::NamedSlot> Module::NamedParameters(const std::string& prefix) const {
  std::vector<NamedSlot> out;
  for (const auto& [name, slot] : params_) {
    out.push_back({prefix.empty() ? name : prefix + "." + name, slot});
  }
  for (const auto& child : children_) {
    auto sub = child.module->NamedParameters(prefix.empty() ? child.name
                                                            : prefix + "." + child.name);
    out.insert(out.end(), std::make_move_iterator(sub.begin()), std::make_move_iterator(sub.end()));
  }
  return out;
}

std::vector<Module::NamedModule> Module::NamedModules(const std::string& prefix) {
  std::vector<NamedModule> out{{prefix, this}};
  for (auto& child : children_) {
    auto sub = child.module->NamedModules(prefix.empty() ? child.name : prefix + "." + child.name);
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

absl::Status Module::UnregisterParameter(const std::string& name) {
  for (auto it = params_.begin(); it != params_.end(); ++it) {
    if (it->first == name) {
      params_.erase(it);
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError("no parameter named '" + name + "'");
}

absl::Status Module::MarkOptional(const std::string& name) {
  for (auto& [param, slot] : params_) {
    if (param == name) {
      slot.optional = true;
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError("no parameter named '" + name + "'");
}

absl::Status Module::MarkTied(const std::string& param, std::string source) {
  for (auto& [name, slot] : params_) {
    if (name == param) {
      slot.tied_to = std::move(source);
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError("no parameter named '" + param + "'");
}

absl::Status Module::ReplaceChild(const std::string& name, std::shared_ptr<Module> child) {
  for (auto& c : children_) {
    if (c.name == name) {
      if (!c.rebind(child)) {
        return absl::InvalidArgumentError("cannot replace module '" + name + "' with a " +
                                          child->type_name());
      }
      c.module = std::move(child);
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError("no child module named '" + name + "'");
}

}  // namespace quantserve::models
