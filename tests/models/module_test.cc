#include "models/module.h"

#include <gtest/gtest.h>

#include <memory>

#include "models/layers.h"

namespace quantserve::models {
namespace {

class Holder : public Module {
 public:
  Holder() {
    proj = std::make_shared<DenseLinear>(LinearOptions{4, 2, false});
    RegisterModule("proj", &proj);
  }
  const char* type_name() const override { return "Holder"; }
  std::shared_ptr<Linear> proj;
};

// Regression: the rebind used to test the moved-from pointer, so every replacement failed.
TEST(ModuleTest, ReplaceChildRebindsTheHolder) {
  Holder h;
  auto replacement = std::make_shared<DenseLinear>(LinearOptions{4, 2, true});
  ASSERT_TRUE(h.ReplaceChild("proj", replacement).ok());
  EXPECT_EQ(h.proj.get(), replacement.get());
  EXPECT_EQ(h.NamedParameters().size(), 2u);  // weight + the new module's bias
  EXPECT_EQ(h.NamedModules()[1].module, replacement.get());
}

TEST(ModuleTest, ReplaceChildRefusesUnknownNamesAndWrongTypes) {
  Holder h;
  EXPECT_EQ(h.ReplaceChild("nope", std::make_shared<DenseLinear>(LinearOptions{4, 2, false})).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(h.ReplaceChild("proj", std::make_shared<RmsNorm>(4, 1e-5, c10::ScalarType::Float)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quantserve::models
