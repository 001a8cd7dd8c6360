#include "common/env.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace quantserve::common {
namespace {

std::string RegionString(const ReadOnlyRegion& region) {
  return std::string(reinterpret_cast<const char*>(region.data()), region.size());
}

void ExpectErrorNaming(const absl::Status& status, absl::StatusCode code, const std::string& path) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_NE(std::string(status.message()).find(path), std::string::npos) << status;
}

// ---------------------------------------------------------------------------------------
// JoinPath

TEST(JoinPathTest, JoinsWithOneSlash) {
  EXPECT_EQ(JoinPath("a", "b"), "a/b");
  EXPECT_EQ(JoinPath("a/", "b"), "a/b");
  EXPECT_EQ(JoinPath("/", "b"), "/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
}

// ---------------------------------------------------------------------------------------
// MemEnv

TEST(MemEnvTest, ReadsFilesAsRegionsAndStrings) {
  std::unique_ptr<Env> env = NewMemEnv({{"/m/a.bin", "hello"}, {"/m/sub/b.bin", "x"}});
  auto region = env->NewReadOnlyRegion("/m/a.bin");
  ASSERT_TRUE(region.ok()) << region.status();
  EXPECT_EQ(RegionString(**region), "hello");
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*region)->data()) % 64, 0u);
  EXPECT_EQ(*env->ReadFileToString("/m/a.bin"), "hello");
  EXPECT_EQ(*env->GetFileSize("/m/a.bin"), 5u);
}

TEST(MemEnvTest, ZeroByteFileGivesUsableEmptyRegion) {
  std::unique_ptr<Env> env = NewMemEnv({{"/m/empty", ""}});
  auto region = env->NewReadOnlyRegion("/m/empty");
  ASSERT_TRUE(region.ok()) << region.status();
  EXPECT_EQ((*region)->size(), 0u);
  EXPECT_NE((*region)->data(), nullptr);
  EXPECT_EQ(*env->ReadFileToString("/m/empty"), "");
  EXPECT_EQ(*env->GetFileSize("/m/empty"), 0u);
}

TEST(MemEnvTest, RegionOutlivesEnv) {
  std::unique_ptr<Env> env = NewMemEnv({{"f", std::string(1000, 'q')}});
  auto region = env->NewReadOnlyRegion("f");
  ASSERT_TRUE(region.ok());
  env.reset();
  EXPECT_EQ(RegionString(**region), std::string(1000, 'q'));
}

TEST(MemEnvTest, DirectoriesAreImplied) {
  std::unique_ptr<Env> env = NewMemEnv({{"/m/a.bin", "1"}, {"/m/sub/deep/b.bin", "2"}});
  EXPECT_TRUE(env->IsDirectory("/"));
  EXPECT_TRUE(env->IsDirectory("/m"));
  EXPECT_TRUE(env->IsDirectory("/m/"));
  EXPECT_TRUE(env->IsDirectory("/m/sub"));
  EXPECT_TRUE(env->IsDirectory("/m/sub/deep"));
  EXPECT_FALSE(env->IsDirectory("/m/a.bin"));
  EXPECT_FALSE(env->IsDirectory("/m/su"));
  EXPECT_FALSE(env->IsDirectory("/n"));
  EXPECT_TRUE(env->FileExists("/m/a.bin"));
  EXPECT_FALSE(env->FileExists("/m"));
  EXPECT_FALSE(env->FileExists("/m/b.bin"));
}

TEST(MemEnvTest, PathsAreNormalized) {
  std::unique_ptr<Env> env = NewMemEnv({{"//m///a.bin", "1"}});
  EXPECT_TRUE(env->FileExists("/m/a.bin"));
  EXPECT_TRUE(env->FileExists("/m//a.bin"));
  EXPECT_TRUE(env->IsDirectory("/m//"));
  EXPECT_FALSE(env->FileExists("m/a.bin"));  // relative and absolute differ
}

TEST(MemEnvTest, ListsDirectoriesSortedAndUnique) {
  std::unique_ptr<Env> env =
      NewMemEnv({{"/m/b", "1"}, {"/m/a/x", "2"}, {"/m/a/y", "3"}, {"/m/a.b", "4"}, {"/ma/z", "5"}});
  auto names = env->ListDirectory("/m");
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "a.b", "b"}));
  EXPECT_EQ(*env->ListDirectory("/m/a"), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(*env->ListDirectory("/"), (std::vector<std::string>{"m", "ma"}));
}

TEST(MemEnvTest, ErrorsUseCanonicalCodesAndNameThePath) {
  std::unique_ptr<Env> env = NewMemEnv({{"/m/a.bin", "1"}});
  ExpectErrorNaming(env->NewReadOnlyRegion("/m/none").status(), absl::StatusCode::kNotFound,
                    "/m/none");
  ExpectErrorNaming(env->ReadFileToString("/m/none").status(), absl::StatusCode::kNotFound,
                    "/m/none");
  ExpectErrorNaming(env->GetFileSize("/m/none").status(), absl::StatusCode::kNotFound, "/m/none");
  ExpectErrorNaming(env->ListDirectory("/none").status(), absl::StatusCode::kNotFound, "/none");
  ExpectErrorNaming(env->NewReadOnlyRegion("/m").status(), absl::StatusCode::kFailedPrecondition,
                    "/m");
  ExpectErrorNaming(env->ListDirectory("/m/a.bin").status(), absl::StatusCode::kFailedPrecondition,
                    "/m/a.bin");
  EXPECT_EQ(env->NewReadOnlyRegion("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(env->NewReadOnlyRegion(std::string("/m/a.bin\0x", 10)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------
// POSIX Env

class PosixEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qs_env_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (auto it = paths_.rbegin(); it != paths_.rend(); ++it) {
      if (::unlink(it->c_str()) != 0) {
        ::rmdir(it->c_str());
      }
    }
    ::rmdir(dir_.c_str());
  }
  std::string Write(const std::string& name, const std::string& bytes) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    paths_.push_back(path);
    return path;
  }
  std::string Mkdir(const std::string& name) {
    std::string path = dir_ + "/" + name;
    EXPECT_EQ(::mkdir(path.c_str(), 0755), 0);
    paths_.push_back(path);
    return path;
  }

  Env* env_ = Env::Default();
  std::string dir_;
  std::vector<std::string> paths_;
};

TEST_F(PosixEnvTest, DefaultIsASingleton) { EXPECT_EQ(Env::Default(), Env::Default()); }

TEST_F(PosixEnvTest, MapsWholeFile) {
  std::string bytes(70000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<char>(i * 7);
  }
  const std::string path = Write("f.bin", bytes);
  auto region = env_->NewReadOnlyRegion(path);
  ASSERT_TRUE(region.ok()) << region.status();
  EXPECT_EQ((*region)->size(), bytes.size());
  EXPECT_EQ(RegionString(**region), bytes);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*region)->data()) % 4096, 0u);
  // Bigger than ReadFileToString's read buffer.
  EXPECT_EQ(*env_->ReadFileToString(path), bytes);
  EXPECT_EQ(*env_->GetFileSize(path), bytes.size());
}

TEST_F(PosixEnvTest, ZeroByteFileGivesUsableEmptyRegion) {
  const std::string path = Write("empty", "");
  auto region = env_->NewReadOnlyRegion(path);
  ASSERT_TRUE(region.ok()) << region.status();
  EXPECT_EQ((*region)->size(), 0u);
  EXPECT_NE((*region)->data(), nullptr);
  EXPECT_EQ(*env_->ReadFileToString(path), "");
}

TEST_F(PosixEnvTest, RegionSurvivesUnlink) {
  const std::string path = Write("gone", "still here");
  auto region = env_->NewReadOnlyRegion(path);
  ASSERT_TRUE(region.ok());
  ASSERT_EQ(::unlink(path.c_str()), 0);
  EXPECT_EQ(RegionString(**region), "still here");
  EXPECT_FALSE(env_->FileExists(path));
}

TEST_F(PosixEnvTest, FileExistsAndIsDirectory) {
  const std::string file = Write("f", "x");
  const std::string sub = Mkdir("sub");
  EXPECT_TRUE(env_->FileExists(file));
  EXPECT_FALSE(env_->FileExists(sub));
  EXPECT_FALSE(env_->FileExists(dir_ + "/none"));
  EXPECT_TRUE(env_->IsDirectory(sub));
  EXPECT_TRUE(env_->IsDirectory(dir_));
  EXPECT_FALSE(env_->IsDirectory(file));
  EXPECT_FALSE(env_->IsDirectory(dir_ + "/none"));
}

TEST_F(PosixEnvTest, ListsDirectorySortedWithoutDots) {
  Write("b", "1");
  Write("a", "2");
  Mkdir("c");
  auto names = env_->ListDirectory(dir_);
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "b", "c"}));
}

TEST_F(PosixEnvTest, MissingPathsAreNotFoundNamingThePath) {
  const std::string missing = dir_ + "/none";
  ExpectErrorNaming(env_->NewReadOnlyRegion(missing).status(), absl::StatusCode::kNotFound,
                    missing);
  ExpectErrorNaming(env_->ReadFileToString(missing).status(), absl::StatusCode::kNotFound, missing);
  ExpectErrorNaming(env_->GetFileSize(missing).status(), absl::StatusCode::kNotFound, missing);
  ExpectErrorNaming(env_->ListDirectory(missing).status(), absl::StatusCode::kNotFound, missing);
  // Through a regular file, as if it were a directory.
  const std::string through = Write("f", "x") + "/y";
  ExpectErrorNaming(env_->NewReadOnlyRegion(through).status(), absl::StatusCode::kNotFound,
                    through);
}

TEST_F(PosixEnvTest, DirectoryIsNotAFile) {
  const std::string sub = Mkdir("sub");
  ExpectErrorNaming(env_->NewReadOnlyRegion(sub).status(), absl::StatusCode::kFailedPrecondition,
                    sub);
  ExpectErrorNaming(env_->ReadFileToString(sub).status(), absl::StatusCode::kFailedPrecondition,
                    sub);
  ExpectErrorNaming(env_->GetFileSize(sub).status(), absl::StatusCode::kFailedPrecondition, sub);
}

TEST_F(PosixEnvTest, UnreadableFileIsPermissionDenied) {
  if (::geteuid() == 0) {
    GTEST_SKIP() << "root reads files regardless of their mode";
  }
  const std::string path = Write("secret", "x");
  ASSERT_EQ(::chmod(path.c_str(), 0), 0);
  ExpectErrorNaming(env_->NewReadOnlyRegion(path).status(), absl::StatusCode::kPermissionDenied,
                    path);
}

TEST_F(PosixEnvTest, BadPathsAreInvalidArgument) {
  EXPECT_EQ(env_->NewReadOnlyRegion("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(env_->ReadFileToString(std::string("a\0b", 3)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(env_->FileExists(std::string("a\0b", 3)));
}

}  // namespace
}  // namespace quantserve::common
