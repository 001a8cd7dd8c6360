#include "server/route_table.h"

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace quantserve::server {
namespace {

RouteSpec Spec(std::vector<RouteVariantSpec> variants, std::string mirror = "",
               uint32_t mirror_percent = 0) {
  return RouteSpec{"chat", std::move(variants), std::move(mirror), mirror_percent};
}

RouteTable::ReadyFn AllReady() {
  return [](absl::string_view) { return true; };
}

std::string PickOk(RouteTable& table, absl::string_view key,
                   const RouteTable::ReadyFn& ready = AllReady()) {
  auto choice = table.Pick("chat", key, ready);
  EXPECT_TRUE(choice.has_value());
  EXPECT_TRUE(choice->ok()) << choice->status();
  return choice->ok() ? (*choice)->model : "";
}

TEST(RouteTableTest, ValidateNamesTheField) {
  const std::vector<std::pair<RouteSpec, std::string>> bad = {
      {RouteSpec{"", {{"a", 1}}}, "route.name"},
      {RouteSpec{"chat", {}}, "route.variants"},
      {RouteSpec{"chat", {{"a", 1}, {"a", 2}}}, "route.variants[1].model"},
      {RouteSpec{"chat", {{"a", 0}, {"b", 0}}}, "route.variants"},
      {RouteSpec{"chat", {{"bad name", 1}}}, "route.variants[0].model"},
      {RouteSpec{"chat", {{"chat", 1}}}, "route.variants[0].model"},
      {RouteSpec{"chat", {{"a", 1}}, "m", 101}, "route.mirror_percent"},
      {RouteSpec{"chat", {{"a", 1}}, "m", 0}, "route.mirror_percent"},
      {RouteSpec{"chat", {{"a", 1}}, "", 10}, "route.mirror_percent"},
      {RouteSpec{"chat", {{"a", 1}}, "a", 10}, "route.mirror_model"},
  };
  for (const auto& [spec, field] : bad) {
    const absl::Status s = RouteTable::Validate(spec);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_EQ(s.message().substr(0, field.size()), field) << s;
  }
  EXPECT_TRUE(RouteTable::Validate(Spec({{"a", 3}, {"b", 0}}, "m", 50)).ok());
}

TEST(RouteTableTest, KeylessRequestsFollowTheWeightsInEveryWindow) {
  RouteTable table;
  ASSERT_TRUE(table.Set(Spec({{"a", 3}, {"b", 1}})).ok());
  std::map<std::string, int> counts;
  std::vector<std::string> order;
  for (int i = 0; i < 400; ++i) {
    order.push_back(PickOk(table, ""));
    ++counts[order.back()];
  }
  EXPECT_EQ(counts["a"], 300);
  EXPECT_EQ(counts["b"], 100);
  // Smooth: every 4 consecutive requests hold exactly one "b".
  for (size_t i = 0; i + 4 <= order.size(); i += 4) {
    int b = 0;
    for (size_t j = i; j < i + 4; ++j) b += order[j] == "b";
    EXPECT_EQ(b, 1) << "window at " << i;
  }
}

TEST(RouteTableTest, KeysStickAndWeightChangesMoveOnlyTowardTheGrowingVariant) {
  RouteTable table;
  ASSERT_TRUE(table.Set(Spec({{"a", 3}, {"b", 1}})).ok());
  std::map<std::string, std::string> first;
  std::map<std::string, int> share;
  for (int k = 0; k < 2000; ++k) {
    const std::string key = absl::StrCat("user-", k);
    first[key] = PickOk(table, key);
    ++share[first[key]];
    EXPECT_EQ(PickOk(table, key), first[key]) << key;  // sticky
  }
  // The split follows the weights (hashing: within a few percent at 2000 keys).
  EXPECT_NEAR(share["a"] / 2000.0, 0.75, 0.04);
  // 3:1 -> 1:1: keys only move from a to b, about a third of a's keys (0.25 of all).
  ASSERT_TRUE(table.Set(Spec({{"a", 1}, {"b", 1}})).ok());
  int moved = 0;
  for (const auto& [key, before] : first) {
    const std::string now = PickOk(table, key);
    if (now != before) {
      ++moved;
      EXPECT_EQ(before, "a") << key << " left the variant whose share grew";
    }
  }
  EXPECT_NEAR(moved / 2000.0, 0.25, 0.04);
  RecordProperty("keys_moved_of_2000", moved);
}

TEST(RouteTableTest, VariantsThatAreNotReadyGiveAwayOnlyTheirOwnTraffic) {
  RouteTable table;
  ASSERT_TRUE(table.Set(Spec({{"a", 1}, {"b", 1}, {"c", 1}})).ok());
  const auto without_b = [](absl::string_view m) { return m != "b"; };
  for (int k = 0; k < 500; ++k) {
    const std::string key = absl::StrCat("k", k);
    const std::string all = PickOk(table, key);
    const std::string some = PickOk(table, key, without_b);
    EXPECT_NE(some, "b");
    if (all != "b") {
      EXPECT_EQ(some, all) << key;
    }
  }
  for (int i = 0; i < 30; ++i) EXPECT_NE(PickOk(table, "", without_b), "b");
  auto none = table.Pick("chat", "", [](absl::string_view) { return false; });
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ(none->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(table.Pick("not-a-route", "", AllReady()).has_value());
}

TEST(RouteTableTest, MirrorRunsItsShareWhenReady) {
  RouteTable table;
  ASSERT_TRUE(table.Set(Spec({{"a", 1}}, "m", 50)).ok());
  int mirrored = 0;
  for (int i = 0; i < 400; ++i) {
    auto choice = table.Pick("chat", "", AllReady());
    ASSERT_TRUE(choice.has_value() && choice->ok());
    EXPECT_EQ((*choice)->model, "a");
    mirrored += (*choice)->mirror == "m";
  }
  EXPECT_EQ(mirrored, 200);
  const auto mirror_down = [](absl::string_view m) { return m != "m"; };
  for (int i = 0; i < 10; ++i) {
    auto choice = table.Pick("chat", "", mirror_down);
    EXPECT_TRUE((*choice)->mirror.empty());
  }
}

TEST(RouteTableTest, SetReplacesDeleteRemovesAndListIsSorted) {
  RouteTable table;
  ASSERT_TRUE(table.Set(RouteSpec{"zeta", {{"a", 1}}}).ok());
  ASSERT_TRUE(table.Set(RouteSpec{"alpha", {{"a", 1}, {"b", 2}}}).ok());
  ASSERT_TRUE(table.Set(RouteSpec{"alpha", {{"b", 1}}}).ok());
  const std::vector<RouteSpec> list = table.List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "alpha");
  ASSERT_EQ(list[0].variants.size(), 1u);
  EXPECT_EQ(list[0].variants[0].model, "b");
  EXPECT_EQ(table.RoutesUsing("a"), std::vector<std::string>{"zeta"});
  EXPECT_TRUE(table.Delete("zeta").ok());
  EXPECT_EQ(table.Delete("zeta").code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(table.Contains("zeta"));
  EXPECT_EQ(table.Get("zeta").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace quantserve::server
