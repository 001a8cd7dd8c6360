#include "loader/safetensors_file.h"

#include <unistd.h>

#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/env.h"
#include "gtest/gtest.h"
#include "tests/loader/safetensors_test_util.h"

namespace quantserve::loader {
namespace {

using ::quantserve::loader::testing::Bytes;
using ::quantserve::loader::testing::ExpectError;
using ::quantserve::loader::testing::FaultInjectingEnv;
using ::quantserve::loader::testing::MakeSafetensorsBytes;
using ::quantserve::loader::testing::MakeSafetensorsBytesWithLength;
using ::quantserve::loader::testing::SafetensorsBuilder;

constexpr char kPath[] = "/m/model.safetensors";

absl::StatusOr<std::unique_ptr<SafetensorsFile>> OpenBytes(const std::string& bytes) {
  std::unique_ptr<common::Env> env = common::NewMemEnv({{kPath, bytes}});
  // The file keeps its region alive after the Env goes away.
  return SafetensorsFile::Open(env.get(), kPath);
}

// Opens `header` + `data` and expects DATA_LOSS naming the file and each of `parts`.
void ExpectCorrupt(const std::string& header, const std::string& data,
                   std::initializer_list<std::string_view> parts) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      OpenBytes(MakeSafetensorsBytes(header, data));
  ASSERT_FALSE(file.ok());
  ExpectError(file.status(), absl::StatusCode::kDataLoss, {kPath});
  ExpectError(file.status(), absl::StatusCode::kDataLoss, parts);
}

// ---------------------------------------------------------------------------------------
// Valid files

TEST(SafetensorsFileTest, OpensWellFormedFile) {
  SafetensorsBuilder builder;
  builder.AddF32("b.weight", {2, 3}, {0, 1, 2, 3, 4, 5})
      .Add("a.bias", "I64", {2}, Bytes<int64_t>({7, -8}))
      .Add("c.mask", "BOOL", {3}, std::string("\x01\x00\x01", 3))
      .Metadata("format", "pt");
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = OpenBytes(builder.Build());
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;

  EXPECT_EQ(f.path(), kPath);
  EXPECT_EQ(f.header_size(), builder.HeaderText().size());
  EXPECT_EQ(f.data_offset(), 8 + builder.HeaderText().size());
  EXPECT_EQ(f.tensor_bytes(), 24u + 16u + 3u);
  EXPECT_EQ(f.file_size(), f.data_offset() + f.tensor_bytes());
  // Offset order, not name order.
  EXPECT_EQ(f.TensorNames(), (std::vector<std::string>{"b.weight", "a.bias", "c.mask"}));
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));

  const TensorInfo* w = f.FindTensor("b.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, Dtype::kF32);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w->numel, 6u);
  EXPECT_EQ(w->data_begin, 0u);
  EXPECT_EQ(w->data_end, 24u);
  EXPECT_EQ(w->byte_size(), 24u);
  EXPECT_EQ(w->file_offset, f.data_offset());

  absl::StatusOr<absl::Span<const uint8_t>> w_data = f.GetTensorData("b.weight");
  ASSERT_TRUE(w_data.ok());
  ASSERT_EQ(w_data->size(), 24u);
  float values[6];
  std::memcpy(values, w_data->data(), sizeof(values));
  EXPECT_EQ(values[5], 5.0f);

  absl::StatusOr<absl::Span<const uint8_t>> b_data = f.GetTensorData("a.bias");
  ASSERT_TRUE(b_data.ok());
  int64_t bias[2];
  std::memcpy(bias, b_data->data(), sizeof(bias));
  EXPECT_EQ(bias[1], -8);
  // Views into one mapping, not copies: the spans sit exactly as far apart as in the file.
  EXPECT_EQ(b_data->data() - w_data->data(), 24);
  EXPECT_EQ(f.GetTensorData("a.bias")->data(), b_data->data());
  EXPECT_EQ(f.TensorData(*f.FindTensor("c.mask")).size(), 3u);
}

TEST(SafetensorsFileTest, UnknownTensorIsNotFoundNamingFileAndTensor) {
  SafetensorsBuilder builder;
  builder.AddF32("w", {1}, {1});
  auto file = OpenBytes(builder.Build());
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->FindTensor("nope"), nullptr);
  ExpectError((*file)->GetTensorData("nope").status(), absl::StatusCode::kNotFound,
              {kPath, "\"nope\""});
  ExpectError((*file)->GetTensorInfo("nope").status(), absl::StatusCode::kNotFound,
              {kPath, "\"nope\""});
}

TEST(SafetensorsFileTest, ZeroDimTensorIsAccepted) {
  SafetensorsBuilder builder;
  builder.AddF32("scalar", {}, {3.5f});
  auto file = OpenBytes(builder.Build());
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorInfo* info = (*file)->FindTensor("scalar");
  ASSERT_NE(info, nullptr);
  EXPECT_TRUE(info->shape.empty());
  EXPECT_EQ(info->numel, 1u);
  EXPECT_EQ(info->byte_size(), 4u);
}

TEST(SafetensorsFileTest, EmptyTensorsAreAccepted) {
  SafetensorsBuilder builder;
  builder.Add("empty_first", "BF16", {0, 4}, "")
      .AddF32("w", {1}, {1})
      .Add("empty_mid", "F16", {3, 0}, "")
      .Add("empty_mid2", "I8", {0}, "")
      .AddF32("v", {1}, {2});
  auto file = OpenBytes(builder.Build());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->TensorNames(),
            (std::vector<std::string>{"empty_first", "w", "empty_mid", "empty_mid2", "v"}));
  const TensorInfo* e = (*file)->FindTensor("empty_mid");
  EXPECT_EQ(e->numel, 0u);
  EXPECT_EQ(e->byte_size(), 0u);
  EXPECT_EQ((*file)->GetTensorData("empty_mid")->size(), 0u);
}

TEST(SafetensorsFileTest, EmptyTensorsAtSameOffsetAreOrderedByName) {
  auto file =
      OpenBytes(MakeSafetensorsBytes(R"({"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                                     R"("a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})",
                                     ""));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->TensorNames(), (std::vector<std::string>{"a", "z"}));
}

TEST(SafetensorsFileTest, EmptyHeaderObjectWithNoDataIsAccepted) {
  auto file = OpenBytes(MakeSafetensorsBytes("{}      ", ""));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
  EXPECT_EQ((*file)->tensor_bytes(), 0u);
}

TEST(SafetensorsFileTest, MetadataOnlyHeaderIsAccepted) {
  auto file = OpenBytes(MakeSafetensorsBytes(R"({"__metadata__":{"a":"1","b":""}})", ""));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("a"), "1");
  EXPECT_EQ((*file)->metadata().at("b"), "");
}

TEST(SafetensorsFileTest, UnsortedOffsetsInHeaderAreAccepted) {
  // Entries may appear in any key order; only the byte layout matters.
  auto file =
      OpenBytes(MakeSafetensorsBytes(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[3,5]},)"
                                     R"("b":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})",
                                     "abcde"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->TensorNames(), (std::vector<std::string>{"b", "a"}));
  auto a = (*file)->GetTensorData("a");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(a->data()), a->size()), "de");
}

TEST(SafetensorsFileTest, EveryDtypeHasItsElementSize) {
  for (const DtypeInfo& dtype : AllDtypes()) {
    SCOPED_TRACE(std::string(dtype.name));
    // 8 elements: a whole number of bytes even for 4- and 6-bit types.
    const size_t bytes = 8 * dtype.bits / 8;
    SafetensorsBuilder builder;
    builder.Add("t", std::string(dtype.name), {2, 4}, std::string(bytes, '\x5a'));
    auto file = OpenBytes(builder.Build());
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->FindTensor("t")->dtype, dtype.dtype);
    EXPECT_EQ((*file)->FindTensor("t")->byte_size(), bytes);
  }
}

TEST(SafetensorsFileTest, SubByteDtypeAcceptsWholeBytes) {
  SafetensorsBuilder builder;
  // 12 F4 elements = 6 bytes (how torch's float4_e2m1fn_x2 [2, 3] is saved).
  builder.Add("packed", "F4", {2, 6}, std::string(6, '\x11'));
  auto file = OpenBytes(builder.Build());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->FindTensor("packed")->byte_size(), 6u);
}

TEST(SafetensorsFileTest, HeaderAtExactlyTheFileEndIsAccepted) {
  auto file = OpenBytes(MakeSafetensorsBytes("{}", ""));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->file_size(), 10u);
}

// ---------------------------------------------------------------------------------------
// File-level rules

TEST(SafetensorsFileTest, EmptyFileIsCorrupt) {
  auto file = OpenBytes("");
  ASSERT_FALSE(file.ok());
  ExpectError(file.status(), absl::StatusCode::kDataLoss, {kPath, "0 bytes", "8-byte"});
}

TEST(SafetensorsFileTest, FileShorterThanPrefixIsCorrupt) {
  auto file = OpenBytes(std::string(7, '\0'));
  ASSERT_FALSE(file.ok());
  ExpectError(file.status(), absl::StatusCode::kDataLoss, {kPath, "7 bytes", "8-byte"});
}

TEST(SafetensorsFileTest, HeaderLengthBeyondFileIsCorrupt) {
  auto file = OpenBytes(MakeSafetensorsBytesWithLength(100, "{}", ""));
  ASSERT_FALSE(file.ok());
  ExpectError(file.status(), absl::StatusCode::kDataLoss,
              {kPath, "header length 100", "past the end of the file"});
}

TEST(SafetensorsFileTest, TruncatedFileIsCorrupt) {
  SafetensorsBuilder builder;
  builder.AddF32("w", {4}, {1, 2, 3, 4});
  std::string bytes = builder.Build();
  bytes.resize(bytes.size() - 1);
  auto file = OpenBytes(bytes);
  ASSERT_FALSE(file.ok());
  ExpectError(file.status(), absl::StatusCode::kDataLoss,
              {kPath, "tensor \"w\"", "past the end of the data section"});
}

TEST(SafetensorsFileTest, EveryTruncationIsCorrupt) {
  SafetensorsBuilder builder;
  builder.AddF32("w", {2}, {1, 2}).Add("e", "U8", {0}, "").Metadata("k", "v");
  const std::string bytes = builder.Build();
  for (size_t len = 0; len < bytes.size(); ++len) {
    auto file = OpenBytes(bytes.substr(0, len));
    ASSERT_FALSE(file.ok()) << "length " << len;
    EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss) << file.status();
  }
}

TEST(SafetensorsFileTest, HeaderLengthOverLimitIsCorrupt) {
  auto file = OpenBytes(MakeSafetensorsBytesWithLength(kMaxSafetensorsHeaderBytes + 1, "{}", ""));
  ASSERT_FALSE(file.ok());
  ExpectError(file.status(), absl::StatusCode::kDataLoss,
              {kPath, "100000001", "exceeds the limit of 100000000"});
  auto huge = OpenBytes(MakeSafetensorsBytesWithLength(UINT64_MAX, "{}", ""));
  ExpectError(huge.status(), absl::StatusCode::kDataLoss, {kPath, "exceeds the limit"});
}

TEST(SafetensorsFileTest, NonJsonHeaderIsCorrupt) {
  ExpectCorrupt("not json", "", {"header is not valid JSON"});
  ExpectCorrupt("", "", {"header is not valid JSON"});
  ExpectCorrupt("{\"a\":", "", {"header is not valid JSON"});
  ExpectCorrupt("{} trailing", "", {"header is not valid JSON"});
  // A NUL must not end the header early and hide what follows.
  ExpectCorrupt(std::string("{}\0\0", 4), "", {"header is not valid JSON", "NUL byte"});
  ExpectCorrupt(std::string("{}\0{\"w\":1}", 11), "", {"NUL byte at header offset 2"});
  ExpectCorrupt("{/*c*/}", "", {"header is not valid JSON"});
  ExpectCorrupt("\xEF\xBB\xBF{}", "", {"byte order mark"});
}

TEST(SafetensorsFileTest, InvalidUtf8HeaderIsCorrupt) {
  ExpectCorrupt("{\"\xff\":{}}", "", {"header is not valid JSON"});
}

TEST(SafetensorsFileTest, JsonThatIsNotAnObjectIsCorrupt) {
  ExpectCorrupt("[]", "", {"not a JSON object", "array"});
  ExpectCorrupt("42", "", {"not a JSON object"});
  ExpectCorrupt("\"x\"", "", {"not a JSON object"});
  ExpectCorrupt("null", "", {"not a JSON object"});
}

// ---------------------------------------------------------------------------------------
// Tensor entry rules

std::string Entry(const std::string& name, const std::string& body) {
  return "{\"" + name + "\":" + body + "}";
}

TEST(SafetensorsFileTest, EntryThatIsNotAnObjectIsCorrupt) {
  ExpectCorrupt(Entry("w", "[1,2]"), "", {"tensor \"w\"", "not a JSON object"});
  ExpectCorrupt(Entry("w", "\"F32\""), "", {"tensor \"w\"", "not a JSON object"});
}

TEST(SafetensorsFileTest, MissingKeyIsCorrupt) {
  ExpectCorrupt(Entry("w", R"({"shape":[1],"data_offsets":[0,4]})"), std::string(4, '\0'),
                {"tensor \"w\"", "missing \"dtype\""});
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","data_offsets":[0,4]})"), std::string(4, '\0'),
                {"tensor \"w\"", "missing \"shape\""});
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","shape":[1]})"), std::string(4, '\0'),
                {"tensor \"w\"", "missing \"data_offsets\""});
}

TEST(SafetensorsFileTest, UnexpectedKeyIsCorrupt) {
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1})"),
                std::string(4, '\0'), {"tensor \"w\"", "unexpected key \"x\""});
}

TEST(SafetensorsFileTest, UnknownDtypeIsCorrupt) {
  ExpectCorrupt(Entry("w", R"({"dtype":"F128","shape":[1],"data_offsets":[0,16]})"),
                std::string(16, '\0'), {"tensor \"w\"", "unknown dtype \"F128\""});
  ExpectCorrupt(Entry("w", R"({"dtype":"f32","shape":[1],"data_offsets":[0,4]})"),
                std::string(4, '\0'), {"tensor \"w\"", "unknown dtype \"f32\""});
  ExpectCorrupt(Entry("w", R"({"dtype":"","shape":[1],"data_offsets":[0,4]})"),
                std::string(4, '\0'), {"tensor \"w\"", "unknown dtype"});
}

TEST(SafetensorsFileTest, NonStringDtypeIsCorrupt) {
  ExpectCorrupt(Entry("w", R"({"dtype":4,"shape":[1],"data_offsets":[0,4]})"), std::string(4, '\0'),
                {"tensor \"w\"", "dtype is not a string"});
}

TEST(SafetensorsFileTest, NegativeShapeIsCorrupt) {
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","shape":[2,-1],"data_offsets":[0,0]})"), "",
                {"tensor \"w\"", "shape[1] is not a non-negative integer", "-1"});
}

TEST(SafetensorsFileTest, NonIntegerShapeIsCorrupt) {
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"),
                std::string(8, '\0'), {"tensor \"w\"", "shape[0] is not a non-negative integer"});
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","shape":["2"],"data_offsets":[0,8]})"),
                std::string(8, '\0'), {"tensor \"w\"", "shape[0]"});
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","shape":[true],"data_offsets":[0,4]})"),
                std::string(4, '\0'), {"tensor \"w\"", "shape[0]"});
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","shape":[[1]],"data_offsets":[0,4]})"),
                std::string(4, '\0'), {"tensor \"w\"", "shape[0]"});
  // Beyond uint64: parsed as a float, so not an integer either.
  ExpectCorrupt(
      Entry("w", R"({"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]})"),
      std::string(4, '\0'), {"tensor \"w\"", "shape[0]"});
}

TEST(SafetensorsFileTest, NegativeZeroDimIsZero) {
  auto file = OpenBytes(
      MakeSafetensorsBytes(Entry("w", R"({"dtype":"F32","shape":[-0],"data_offsets":[0,0]})"), ""));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->FindTensor("w")->shape, (std::vector<int64_t>{0}));
}

TEST(SafetensorsFileTest, ShapeNotArrayIsCorrupt) {
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","shape":4,"data_offsets":[0,16]})"),
                std::string(16, '\0'), {"tensor \"w\"", "shape is not an array"});
}

TEST(SafetensorsFileTest, DimensionBeyondInt64IsCorrupt) {
  ExpectCorrupt(
      Entry("w", R"({"dtype":"F32","shape":[0,9223372036854775808],"data_offsets":[0,0]})"), "",
      {"tensor \"w\"", "shape[1] = 9223372036854775808 does not fit in int64"});
}

TEST(SafetensorsFileTest, ElementCountOverflowIsCorrupt) {
  ExpectCorrupt(
      Entry("w", R"({"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]})"), "",
      {"tensor \"w\"", "more elements than fit in 64 bits"});
}

TEST(SafetensorsFileTest, ByteSizeOverflowIsCorrupt) {
  ExpectCorrupt(Entry("w", R"({"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]})"),
                "", {"tensor \"w\"", "overflows 64 bits"});
}

TEST(SafetensorsFileTest, SubByteTensorNotWholeBytesIsCorrupt) {
  ExpectCorrupt(Entry("w", R"({"dtype":"F4","shape":[3],"data_offsets":[0,2]})"),
                std::string(2, '\0'), {"tensor \"w\"", "not a whole number of bytes"});
}

TEST(SafetensorsFileTest, MalformedDataOffsetsAreCorrupt) {
  const std::string data(4, '\0');
  for (const char* offsets : {"[0]", "[0,4,4]", "[]", "\"0,4\"", "[-1,4]", "[0,4.0]", "[0,\"4\"]",
                              "{\"begin\":0}", "null"}) {
    SCOPED_TRACE(offsets);
    ExpectCorrupt(
        Entry("w", std::string(R"({"dtype":"F32","shape":[1],"data_offsets":)") + offsets + "}"),
        data, {"tensor \"w\"", "data_offsets must be [begin, end]"});
  }
}

TEST(SafetensorsFileTest, BeginAfterEndIsCorrupt) {
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","shape":[1],"data_offsets":[8,4]})"),
                std::string(8, '\0'), {"tensor \"w\"", "[8, 4]", "begin > end"});
}

TEST(SafetensorsFileTest, OffsetsOutOfBoundsAreCorrupt) {
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"),
                std::string(4, '\0'),
                {"tensor \"w\"", "[0, 8]", "past the end of the data section"});
  ExpectCorrupt(Entry("w", R"({"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,)"
                           R"(18446744073709551615]})"),
                std::string(4, '\0'), {"tensor \"w\"", "past the end of the data section"});
}

TEST(SafetensorsFileTest, WrongByteLengthIsCorrupt) {
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,20]})"),
                std::string(20, '\0'),
                {"tensor \"w\"", "span 20 bytes", "[2, 3] x F32 needs 24 bytes"});
  ExpectCorrupt(Entry("w", R"({"dtype":"BF16","shape":[],"data_offsets":[0,4]})"),
                std::string(4, '\0'), {"tensor \"w\"", "[] x BF16 needs 2 bytes"});
}

TEST(SafetensorsFileTest, OverlappingOffsetsAreCorrupt) {
  ExpectCorrupt(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                std::string(6, '\0'), {"tensor \"b\"", "overlap tensor \"a\" [0, 4]"});
  // Identical ranges.
  ExpectCorrupt(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                R"("b":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})",
                std::string(4, '\0'), {"tensor \"b\"", "overlap tensor \"a\""});
  // An empty tensor inside another one's bytes.
  ExpectCorrupt(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                R"("b":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}})",
                std::string(4, '\0'), {"tensor \"b\"", "overlap tensor \"a\""});
}

TEST(SafetensorsFileTest, GapBetweenTensorsIsCorrupt) {
  ExpectCorrupt(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                std::string(6, '\0'),
                {"tensor \"b\"", "gap", "bytes [2, 4)", "previous tensor \"a\""});
  ExpectCorrupt(Entry("w", R"({"dtype":"U8","shape":[2],"data_offsets":[1,3]})"),
                std::string(3, '\0'), {"tensor \"w\"", "gap", "bytes [0, 1)"});
}

TEST(SafetensorsFileTest, TrailingBytesAreCorrupt) {
  ExpectCorrupt(Entry("w", R"({"dtype":"U8","shape":[2],"data_offsets":[0,2]})"),
                std::string(5, '\0'),
                {"last tensor \"w\" ends at 2", "3 trailing bytes belong to no tensor"});
  ExpectCorrupt("{}", std::string(1, '\0'), {"no tensors", "1 trailing bytes"});
}

TEST(SafetensorsFileTest, DuplicateTensorNameIsCorrupt) {
  ExpectCorrupt(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                R"("w":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                std::string(4, '\0'), {"tensor \"w\"", "appears twice"});
}

TEST(SafetensorsFileTest, DuplicateKeyInEntryIsCorrupt) {
  ExpectCorrupt(Entry("w", R"({"dtype":"U8","dtype":"I8","shape":[2],"data_offsets":[0,2]})"),
                std::string(2, '\0'), {"tensor \"w\"", "duplicate key \"dtype\""});
}

TEST(SafetensorsFileTest, NonStringMetadataIsCorrupt) {
  ExpectCorrupt(R"({"__metadata__":{"format":"pt","n":3}})", "",
                {"__metadata__", "key \"n\"", "not a string"});
  ExpectCorrupt(R"({"__metadata__":{"nested":{"a":"b"}}})", "",
                {"__metadata__", "key \"nested\"", "not a string"});
  ExpectCorrupt(R"({"__metadata__":{"x":null}})", "", {"__metadata__", "key \"x\""});
}

TEST(SafetensorsFileTest, MetadataNotObjectIsCorrupt) {
  ExpectCorrupt(R"({"__metadata__":["a"]})", "", {"__metadata__", "not a JSON object"});
  ExpectCorrupt(R"({"__metadata__":null})", "", {"__metadata__", "not a JSON object"});
}

TEST(SafetensorsFileTest, DuplicateMetadataIsCorrupt) {
  ExpectCorrupt(R"({"__metadata__":{"a":"1"},"__metadata__":{"a":"2"}})", "",
                {"\"__metadata__\" appears twice"});
  ExpectCorrupt(R"({"__metadata__":{"a":"1","a":"2"}})", "",
                {"\"__metadata__\": duplicate key \"a\""});
}

TEST(SafetensorsFileTest, DeeplyNestedHeaderIsRefusedWithoutCrashing) {
  // Refused from the text before it is parsed (common::CheckJsonNesting): copying or dumping a
  // parsed value this deep would recurse once per level.
  constexpr int kDepth = 200000;
  const std::string nested = std::string(kDepth, '[') + std::string(kDepth, ']');
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","shape":[)" + nested + R"(],"data_offsets":[0,4]})"),
                std::string(4, '\0'),
                {"header is not valid JSON", "nests 200003 levels deep (at most 64)"});
  ExpectCorrupt(Entry("w", nested), "",
                {"header is not valid JSON", "nests 200001 levels deep (at most 64)"});
  std::string objects;
  for (int i = 0; i < kDepth; ++i) {
    objects += "{\"a\":";
  }
  objects += "1" + std::string(kDepth, '}');
  ExpectCorrupt(Entry("w", objects), "",
                {"header is not valid JSON", "nests 200001 levels deep (at most 64)"});
  // 64 levels still parse and meet the ordinary checks.
  const std::string deep_ok = std::string(61, '[') + std::string(61, ']');
  ExpectCorrupt(Entry("w", R"({"dtype":"F32","shape":[)" + deep_ok + R"(],"data_offsets":[0,4]})"),
                std::string(4, '\0'), {"tensor \"w\"", "shape[0]", "got array"});
}

// ---------------------------------------------------------------------------------------
// Robustness: arbitrary damage never crashes and never yields an out-of-bounds span.

TEST(SafetensorsFileTest, RandomCorruptionIsRefusedOrSafe) {
  SafetensorsBuilder builder;
  builder.AddF32("a", {2, 2}, {1, 2, 3, 4})
      .Add("b", "BF16", {3}, std::string(6, '\x3f'))
      .Add("c", "F4", {4}, std::string(2, '\x12'))
      .Add("d", "I64", {}, Bytes<int64_t>({9}))
      .Metadata("format", "pt");
  const std::string good = builder.Build();
  std::mt19937 rng(1234);
  int accepted = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int i = 0; i < flips; ++i) {
      // Mostly damage the prefix and header, where the structure is.
      size_t limit = (trial % 4 == 0) ? bytes.size() : 8 + builder.HeaderText().size();
      bytes[rng() % limit] = static_cast<char>(rng() % 256);
    }
    auto file = OpenBytes(bytes);
    if (!file.ok()) {
      ASSERT_EQ(file.status().code(), absl::StatusCode::kDataLoss) << file.status();
      continue;
    }
    ++accepted;
    uint64_t sum = 0;
    for (const TensorInfo& info : (*file)->tensors()) {
      ASSERT_LE(info.file_offset + info.byte_size(), bytes.size());
      ASSERT_GE(info.file_offset, (*file)->data_offset());
      sum += info.byte_size();
    }
    ASSERT_EQ(sum, (*file)->tensor_bytes());
  }
  // Flips inside tensor data or harmless header bytes (e.g. a letter of a name) still pass.
  EXPECT_GT(accepted, 0);
}

// ---------------------------------------------------------------------------------------
// Env interaction

TEST(SafetensorsFileTest, MissingFileIsNotFound) {
  std::unique_ptr<common::Env> env = common::NewMemEnv({});
  auto file = SafetensorsFile::Open(env.get(), "/m/none.safetensors");
  ExpectError(file.status(), absl::StatusCode::kNotFound, {"/m/none.safetensors"});
}

TEST(SafetensorsFileTest, NullEnvIsInvalidArgument) {
  auto file = SafetensorsFile::Open(nullptr, kPath);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsFileTest, EnvFailureIsPropagated) {
  std::unique_ptr<common::Env> mem = common::NewMemEnv({{kPath, "irrelevant"}});
  FaultInjectingEnv env(mem.get());
  env.Fail(FaultInjectingEnv::Op::kRegion, kPath,
           absl::PermissionDeniedError(std::string("open \"") + kPath + "\": denied"));
  auto file = SafetensorsFile::Open(&env, kPath);
  ExpectError(file.status(), absl::StatusCode::kPermissionDenied, {kPath});
}

class SafetensorsFileDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qs_safetensors_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const std::string& path : written_) {
      ::unlink(path.c_str());
    }
    ::rmdir(dir_.c_str());
  }
  std::string Write(const std::string& name, const std::string& bytes) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    written_.push_back(path);
    return path;
  }

  std::string dir_;
  std::vector<std::string> written_;
};

TEST_F(SafetensorsFileDiskTest, OpensRealFileThroughMmap) {
  SafetensorsBuilder builder;
  builder.AddF32("w", {2}, {1.5f, -2.5f}).Add("e", "U8", {0}, "");
  const std::string path = Write("model.safetensors", builder.Build());
  auto file = SafetensorsFile::Open(common::Env::Default(), path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto data = (*file)->GetTensorData("w");
  ASSERT_TRUE(data.ok());
  float values[2];
  std::memcpy(values, data->data(), sizeof(values));
  EXPECT_EQ(values[0], 1.5f);
  EXPECT_EQ(values[1], -2.5f);
}

TEST_F(SafetensorsFileDiskTest, CorruptRealFileNamesThePath) {
  const std::string path = Write("bad.safetensors", MakeSafetensorsBytes("[1]", ""));
  auto file = SafetensorsFile::Open(common::Env::Default(), path);
  ExpectError(file.status(), absl::StatusCode::kDataLoss, {path, "not a JSON object"});
}

TEST_F(SafetensorsFileDiskTest, ZeroByteRealFileIsCorrupt) {
  const std::string path = Write("empty.safetensors", "");
  auto file = SafetensorsFile::Open(common::Env::Default(), path);
  ExpectError(file.status(), absl::StatusCode::kDataLoss, {path, "0 bytes"});
}

TEST_F(SafetensorsFileDiskTest, MissingRealFileIsNotFound) {
  const std::string path = dir_ + "/absent.safetensors";
  auto file = SafetensorsFile::Open(common::Env::Default(), path);
  ExpectError(file.status(), absl::StatusCode::kNotFound, {path});
}

}  // namespace
}  // namespace quantserve::loader
