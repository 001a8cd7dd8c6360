#include "server/status_conversion.h"

#include <string>

#include "gtest/gtest.h"

namespace quantserve::server {
namespace {

TEST(StatusConversionTest, MapsEveryCanonicalCode) {
  struct Row {
    absl::StatusCode absl_code;
    grpc::StatusCode grpc_code;
  };
  const Row kTable[] = {
      {absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED},
      {absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN},
      {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
      {absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
      {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
      {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
      {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
      {absl::StatusCode::kAborted, grpc::StatusCode::ABORTED},
      {absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE},
      {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED},
      {absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL},
      {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
      {absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS},
      {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED},
  };
  for (const Row& row : kTable) {
    grpc::Status converted = ToGrpcStatus(absl::Status(row.absl_code, "why"));
    EXPECT_EQ(converted.error_code(), row.grpc_code) << absl::StatusCodeToString(row.absl_code);
    EXPECT_EQ(converted.error_message(), "why");
  }
}

TEST(StatusConversionTest, OkIsOk) { EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok()); }

TEST(StatusConversionTest, UnknownFutureCodeBecomesUnknown) {
  grpc::Status converted = ToGrpcStatus(absl::Status(static_cast<absl::StatusCode>(99), "new"));
  EXPECT_EQ(converted.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(converted.error_message(), "new");
}

TEST(StatusConversionTest, TruncatesLongMessagesOnACharacterBoundary) {
  // "é" is two bytes; a cut at an odd offset must not leave half of one.
  std::string message;
  while (message.size() < 2 * kMaxGrpcStatusMessageBytes) {
    message += "\xC3\xA9";
  }
  grpc::Status converted = ToGrpcStatus(absl::InternalError(message));
  const std::string& out = converted.error_message();
  ASSERT_LE(out.size(), kMaxGrpcStatusMessageBytes);
  ASSERT_GE(out.size(), 3u);
  EXPECT_EQ(out.substr(out.size() - 3), "...");
  const std::string body = out.substr(0, out.size() - 3);
  EXPECT_EQ(body.size() % 2, 0u);
  EXPECT_EQ(body.substr(body.size() - 2), "\xC3\xA9");
}

}  // namespace
}  // namespace quantserve::server
