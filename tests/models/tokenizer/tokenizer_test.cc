#include "models/tokenizer/tokenizer.h"

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/tokenizer/unicode.h"
#include "nlohmann/json.hpp"

namespace quantserve::models {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

constexpr char kRegenerate[] =
    ".venv/bin/python tests/fixtures/make_tokenizer_refs.py --out <fixtures dir>";

std::string FixturesDir() {
  const char* env = std::getenv("QS_FIXTURES_DIR");
  return env != nullptr && *env != '\0' ? env : QS_DEFAULT_FIXTURES_DIR;
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return false;
  }
  std::ostringstream contents;
  contents << file.rdbuf();
  *out = contents.str();
  return true;
}

// Printable form of a test string for failure messages.
std::string Escape(const std::string& text) { return Json(text).dump(-1, ' ', true); }

std::string Ids(const std::vector<int32_t>& ids) { return Json(ids).dump(); }

// ---------------------------------------------------------------------------------------------
// Parity with HF `tokenizers` on the generated reference cases.

class HfParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfParityTest, MatchesHuggingFace) {
  const std::string dir = FixturesDir() + "/tokenizers/" + GetParam();
  std::string cases_text;
  ASSERT_TRUE(ReadFile(dir + "/cases.json", &cases_text))
      << "missing fixture " << dir << "/cases.json; generate the fixtures with: " << kRegenerate
      << " (or set QS_FIXTURES_DIR)";
  auto tokenizer = Tokenizer::FromFile(dir + "/tokenizer.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const Json cases = Json::parse(cases_text);
  ASSERT_GE(cases.size(), 1000u) << "fixture too small; regenerate with: " << kRegenerate;

  int ids_mismatch = 0, ids_no_special_mismatch = 0, decode_mismatch = 0, skip_mismatch = 0;
  int reported = 0;
  auto report = [&](const std::string& what, const std::string& text, const std::string& want,
                    const std::string& got) {
    if (reported++ < 8) {
      ADD_FAILURE() << GetParam() << " " << what << " mismatch for " << Escape(text)
                    << "\n  want: " << want << "\n  got:  " << got;
    }
  };
  for (const Json& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const auto want_ids = c["ids"].get<std::vector<int32_t>>();
    const auto want_no_special = c["ids_no_special"].get<std::vector<int32_t>>();
    const std::vector<int32_t> ids = (*tokenizer)->Encode(text, /*add_special_tokens=*/true);
    const std::vector<int32_t> no_special = (*tokenizer)->Encode(text, false);
    if (ids != want_ids) {
      ++ids_mismatch;
      report("ids", text, Ids(want_ids), Ids(ids));
    }
    if (no_special != want_no_special) {
      ++ids_no_special_mismatch;
      report("ids_no_special", text, Ids(want_no_special), Ids(no_special));
    }
    // Decode the reference ids so that decoding is judged on its own.
    const std::string decoded = (*tokenizer)->Decode(want_ids, /*skip_special_tokens=*/false);
    if (decoded != c["decoded"].get<std::string>()) {
      ++decode_mismatch;
      report("decode", text, Escape(c["decoded"]), Escape(decoded));
    }
    const std::string skipped = (*tokenizer)->Decode(want_ids, /*skip_special_tokens=*/true);
    if (skipped != c["decoded_skip_special"].get<std::string>()) {
      ++skip_mismatch;
      report("decode(skip_special)", text, Escape(c["decoded_skip_special"]), Escape(skipped));
    }
  }
  std::cout << "[ parity   ] " << GetParam() << ": " << cases.size() << " cases; mismatches: ids "
            << ids_mismatch << ", ids_no_special " << ids_no_special_mismatch << ", decode "
            << decode_mismatch << ", decode_skip_special " << skip_mismatch << std::endl;
  EXPECT_EQ(ids_mismatch, 0);
  EXPECT_EQ(ids_no_special_mismatch, 0);
  EXPECT_EQ(decode_mismatch, 0);
  EXPECT_EQ(skip_mismatch, 0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfParityTest,
                         ::testing::Values("minilm", "gpt2", "llama3", "qwen2"),
                         [](const auto& info) { return info.param; });

// ---------------------------------------------------------------------------------------------
// Hand-written cases on small inline tokenizers.

// Byte-level BPE over "a", "b", "c", " " with merges a+b, ab+c, plus `extra` tokens (ids 6...)
// and the special tokens <s>, </s> right after them. Expectations below were checked against
// HF tokenizers on the same JSON.
Json TinyBpe(const std::vector<std::string>& extra = {}) {
  Json config = Json::parse(R"({
    "version": "1.0",
    "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                      "use_regex": true},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "dropout": null, "unk_token": null,
              "continuing_subword_prefix": null, "end_of_word_suffix": null,
              "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
              "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "abc": 5},
              "merges": ["a b", ["ab", "c"]]}
  })");
  int next = 6;
  for (const std::string& token : extra) {
    config["model"]["vocab"][token] = next++;
  }
  const int bos = next, eos = next + 1;
  config["added_tokens"] = Json::array();
  for (const auto& [content, id] : {std::pair<std::string, int>{"<s>", bos}, {"</s>", eos}}) {
    config["added_tokens"].push_back({{"id", id},
                                      {"content", content},
                                      {"single_word", false},
                                      {"lstrip", false},
                                      {"rstrip", false},
                                      {"normalized", false},
                                      {"special", true}});
  }
  config["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", Json::parse(R"([{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                 {"Sequence": {"id": "A", "type_id": 0}},
                                 {"SpecialToken": {"id": "</s>", "type_id": 0}}])")},
      {"pair", Json::array()},
      {"special_tokens",
       {{"<s>", {{"id", "<s>"}, {"ids", {bos}}, {"tokens", {"<s>"}}}},
        {"</s>", {{"id", "</s>"}, {"ids", {eos}}, {"tokens", {"</s>"}}}}}}};
  return config;
}

std::unique_ptr<Tokenizer> MustCreate(const Json& config) {
  auto tokenizer = Tokenizer::FromJson(config.dump());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

TEST(TokenizerTest, TinyBpeEncodesDecodesAndReportsVocabulary) {
  auto tokenizer = MustCreate(TinyBpe());
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->Encode("abc ab", false), (std::vector<int32_t>{5, 3, 4}));
  EXPECT_EQ(tokenizer->Encode("abc ab", true), (std::vector<int32_t>{6, 5, 3, 4, 7}));
  EXPECT_EQ(tokenizer->Encode("ab</s>c", false), (std::vector<int32_t>{4, 7, 2}));
  EXPECT_EQ(tokenizer->Decode({6, 5, 3, 4, 7}, false), "<s>abc ab</s>");
  EXPECT_EQ(tokenizer->Decode({6, 5, 3, 4, 7}, true), "abc ab");
  EXPECT_EQ(tokenizer->Decode({5, 999, -1}, false), "abc");  // unknown ids are skipped
  EXPECT_EQ(tokenizer->vocab_size(), 8);
  EXPECT_EQ(tokenizer->TokenToId("abc"), 5);
  EXPECT_EQ(tokenizer->TokenToId("</s>"), 7);
  EXPECT_EQ(tokenizer->TokenToId("zzz"), std::nullopt);
  EXPECT_EQ(tokenizer->IdToToken(3), "Ġ");
  EXPECT_EQ(tokenizer->IdToToken(12345), "");
  EXPECT_EQ(tokenizer->TokenBytes(3), " ");
  EXPECT_TRUE(tokenizer->IsSpecial(6));
  EXPECT_FALSE(tokenizer->IsSpecial(5));
  EXPECT_EQ(tokenizer->bos_id(), 6);
  EXPECT_EQ(tokenizer->eos_id(), 7);
  EXPECT_EQ(tokenizer->unk_id(), std::nullopt);
}

TEST(TokenizerTest, EmptyTextGetsOnlyTemplateTokens) {
  auto tokenizer = MustCreate(TinyBpe());
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_TRUE(tokenizer->Encode("", false).empty());
  EXPECT_EQ(tokenizer->Encode("", true), (std::vector<int32_t>{6, 7}));
  EXPECT_EQ(tokenizer->Decode({}, false), "");
}

TEST(TokenizerTest, CharactersMissingFromVocabularyAreDroppedWithoutUnk) {
  auto tokenizer = MustCreate(TinyBpe());
  ASSERT_NE(tokenizer, nullptr);
  // 'z' has no token and there is no unk token: HF drops it, then a and b merge.
  EXPECT_EQ(tokenizer->Encode("azb", false), (std::vector<int32_t>{4}));
}

TEST(TokenizerTest, InvalidUtf8IsReadAsReplacementCharacters) {
  // U+FFFD is EF BF BD, i.e. the byte-level characters "ï", "¿", "½" (ids 6, 7, 8).
  auto tokenizer = MustCreate(TinyBpe({"ï", "¿", "½"}));
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<int32_t> want = {4, 6, 7, 8, 6, 7, 8, 2};
  EXPECT_EQ(tokenizer->Encode("ab\xEF\xBF\xBD\xEF\xBF\xBD"
                              "c",
                              false),
            want);
  EXPECT_EQ(tokenizer->Encode("ab\xFF\xC0"
                              "c",
                              false),
            want);
  EXPECT_EQ(tokenizer->Decode(want, false),
            "ab\xEF\xBF\xBD\xEF\xBF\xBD"
            "c");
  // Truncated sequences and lone continuation bytes must not crash either.
  for (const char* bad : {"\xE2\x82", "\x80\x80\x80", "\xF0\x9F\x98", "\xED\xA0\x80", "\xF5"}) {
    // <s>, </s> and three ids per U+FFFD, which is three bytes long.
    EXPECT_EQ(tokenizer->Encode(bad, true).size(), 2 + internal::SanitizeUtf8(bad).size());
  }
}

TEST(TokenizerTest, TokenBytesGivesRawBytesForStreaming) {
  // "é" is C3 A9; byte-level BPE spells the two bytes "Ã" and "©" (ids 6, 7).
  auto tokenizer = MustCreate(TinyBpe({"Ã", "©"}));
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<int32_t> ids = tokenizer->Encode("é", false);
  ASSERT_EQ(ids, (std::vector<int32_t>{6, 7}));
  EXPECT_EQ(tokenizer->TokenBytes(6), "\xC3");
  EXPECT_EQ(tokenizer->TokenBytes(6) + tokenizer->TokenBytes(7), "é");
  EXPECT_EQ(tokenizer->Decode({6}, false), "\xEF\xBF\xBD");  // half a character decodes lossy
  EXPECT_EQ(tokenizer->TokenBytes(8), "<s>");
  EXPECT_EQ(tokenizer->TokenBytes(1234), "");
  EXPECT_EQ(tokenizer->vocab_size(), 10);
}

TEST(TokenizerTest, ConcurrentEncodeMatchesSerial) {
  auto tokenizer = MustCreate(TinyBpe());
  ASSERT_NE(tokenizer, nullptr);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    texts.push_back(std::string(i % 7, 'a') + " " + std::string(i % 5, 'b') + "c abc");
  }
  std::vector<std::vector<int32_t>> serial;
  for (const std::string& t : texts) {
    serial.push_back(tokenizer->Encode(t, true));
  }
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          failures[w] += tokenizer->Encode(texts[i], true) != serial[i];
        }
      }
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
  for (int f : failures) {
    EXPECT_EQ(f, 0);
  }
}

Json TinyWordPiece() {
  return Json::parse(R"({
    "version": "1.0",
    "added_tokens": [
      {"id": 0, "content": "[UNK]", "special": true, "normalized": false},
      {"id": 1, "content": "[CLS]", "special": true, "normalized": false},
      {"id": 2, "content": "[SEP]", "special": true, "normalized": false}
    ],
    "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                   "strip_accents": null, "lowercase": true},
    "pre_tokenizer": {"type": "BertPreTokenizer"},
    "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 1]},
    "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
    "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
              "max_input_chars_per_word": 8,
              "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "play": 3, "##ing": 4, "cafe": 5,
                        "!": 6, "中": 7, "##s": 8}}
  })");
}

TEST(TokenizerTest, WordPieceNormalizesSplitsAndDecodes) {
  auto tokenizer = MustCreate(TinyWordPiece());
  ASSERT_NE(tokenizer, nullptr);
  // Lowercase + accent stripping, punctuation split, CJK padding, greedy longest match.
  EXPECT_EQ(tokenizer->Encode("PLAYING Café!中", true),
            (std::vector<int32_t>{1, 3, 4, 5, 6, 7, 2}));
  EXPECT_EQ(tokenizer->Encode("plays xyz playingplaying", false),
            (std::vector<int32_t>{3, 8, 0, 0}));  // unmatchable and over-long words -> [UNK]
  EXPECT_EQ(tokenizer->Decode({1, 3, 4, 5, 6, 2}, true), "playing cafe!");
  EXPECT_EQ(tokenizer->Decode({1, 3, 4, 2}, false), "[CLS] playing [SEP]");
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_EQ(tokenizer->eos_id(), 2);
  EXPECT_EQ(tokenizer->unk_id(), 0);
  EXPECT_EQ(tokenizer->TokenBytes(4), "##ing");
}

TEST(TokenizerTest, RoundTripsThroughDecode) {
  auto tokenizer = MustCreate(TinyBpe());
  ASSERT_NE(tokenizer, nullptr);
  for (const char* text : {"", "a", "abc abc", " cab", "ab  c"}) {
    EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(text, true), true), text);
  }
}

// ---------------------------------------------------------------------------------------------
// Errors.

void ExpectInvalid(const std::string& json_text, const std::string& message_part) {
  auto tokenizer = Tokenizer::FromJson(json_text);
  ASSERT_FALSE(tokenizer.ok()) << "accepted: " << json_text.substr(0, 200);
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument) << tokenizer.status();
  EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr(message_part));
}

TEST(TokenizerErrorTest, MalformedJson) {
  ExpectInvalid("", "not valid JSON");
  ExpectInvalid("{\"model\": ", "not valid JSON");
  ExpectInvalid("[1, 2]", "top level must be an object");
  ExpectInvalid("{}", "missing field model");
}

TEST(TokenizerErrorTest, UnsupportedComponentsAreNamed) {
  Json config = TinyBpe();
  config["model"] = Json::parse(R"({"type": "Unigram", "vocab": []})");
  ExpectInvalid(config.dump(), "unsupported model type 'Unigram'");

  config = TinyBpe();
  config["normalizer"] = Json::parse(R"({"type": "Precompiled", "precompiled_charsmap": ""})");
  ExpectInvalid(config.dump(), "unsupported normalizer type 'Precompiled'");

  config = TinyBpe();
  config["normalizer"] = Json::parse(R"({"type": "Sequence", "normalizers": [{"type": "NFKC"}]})");
  ExpectInvalid(config.dump(), "'NFKC' at normalizer.normalizers[0]");

  config = TinyBpe();
  config["pre_tokenizer"] = Json::parse(R"({"type": "Metaspace", "replacement": "_"})");
  ExpectInvalid(config.dump(), "unsupported pre_tokenizer type 'Metaspace'");

  config = TinyBpe();
  config["decoder"] = Json::parse(R"({"type": "CTC"})");
  ExpectInvalid(config.dump(), "unsupported decoder type 'CTC'");

  config = TinyBpe();
  config["post_processor"] = Json::parse(R"({"type": "Magic"})");
  ExpectInvalid(config.dump(), "unsupported post_processor type 'Magic'");
}

TEST(TokenizerErrorTest, InvalidFields) {
  Json config = TinyBpe();
  config["model"]["merges"] = Json::parse(R"(["a b c"])");
  ExpectInvalid(config.dump(), "model.merges[0]");

  config = TinyBpe();
  config["model"]["merges"] = Json::parse(R"(["a q"])");
  ExpectInvalid(config.dump(), "not in the vocabulary");

  config = TinyBpe();
  config["model"]["vocab"]["a"] = "zero";
  ExpectInvalid(config.dump(), "model.vocab");

  config = TinyBpe();
  config["model"]["dropout"] = 0.1;
  ExpectInvalid(config.dump(), "dropout");

  config = TinyBpe();
  config["pre_tokenizer"]["add_prefix_space"] = "yes";
  ExpectInvalid(config.dump(), "pre_tokenizer.add_prefix_space must be a boolean");

  config = TinyBpe();
  config["pre_tokenizer"] = Json::parse(
      R"({"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated",
          "invert": false})");
  ExpectInvalid(config.dump(), "invalid regex");

  config = TinyBpe();
  config["pre_tokenizer"] = Json::parse(
      R"({"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways", "invert": false})");
  ExpectInvalid(config.dump(), "unknown split behavior 'Sideways'");

  config = TinyBpe();
  config["post_processor"]["single"][0]["SpecialToken"]["id"] = "<missing>";
  ExpectInvalid(config.dump(), "'<missing>'");

  config = TinyWordPiece();
  config["model"]["unk_token"] = "<unk>";
  ExpectInvalid(config.dump(), "'<unk>' is not in the vocabulary");

  config = TinyBpe();
  config["added_tokens"][0]["content"] = 5;
  ExpectInvalid(config.dump(), "added_tokens[0].content must be a string");

  config = TinyBpe();
  config["model"] = 7;
  ExpectInvalid(config.dump(), "model must be an object");
}

TEST(TokenizerErrorTest, DeeplyNestedSequencesAreRefused) {
  Json normalizer = {{"type", "Lowercase"}};
  for (int i = 0; i < 500; ++i) {
    normalizer = {{"type", "Sequence"}, {"normalizers", Json::array({normalizer})}};
  }
  Json config = TinyBpe();
  config["normalizer"] = normalizer;
  // Refused from the text, before anything walks the parsed value (common::CheckJsonNesting).
  ExpectInvalid(config.dump(), "tokenizer.json: JSON nests 1002 levels deep (at most 64)");
}

TEST(TokenizerErrorTest, MissingFileIsNotFound) {
  auto tokenizer = Tokenizer::FromFile("/nonexistent/dir/tokenizer.json");
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("/nonexistent/dir"));
}

// ---------------------------------------------------------------------------------------------
// Unicode helpers.

TEST(UnicodeTest, NormalizationForms) {
  using internal::NfcUtf8;
  using internal::NfdUtf8;
  EXPECT_EQ(NfcUtf8("e\xCC\x81"), "\xC3\xA9");                       // e + acute -> é
  EXPECT_EQ(NfdUtf8("\xC3\xA9"), "e\xCC\x81");                       // é -> e + acute
  EXPECT_EQ(NfcUtf8("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "각");  // Hangul L V T
  EXPECT_EQ(NfdUtf8("각"), "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8");
  // Canonical ordering: dot below (220) sorts before dot above (230), then composes.
  EXPECT_EQ(NfcUtf8("q\xCC\x87\xCC\xA3"), "q\xCC\xA3\xCC\x87");
  EXPECT_EQ(NfcUtf8("s\xCC\x87\xCC\xA3"), "\xE1\xB9\xA9");  // ṩ
  EXPECT_EQ(NfcUtf8("\xE2\x84\xAB"), "\xC3\x85");           // Angstrom sign -> Å (singleton)
  EXPECT_EQ(NfcUtf8("plain ascii"), "plain ascii");
}

TEST(UnicodeTest, SanitizeUsesMaximalSubparts) {
  using internal::SanitizeUtf8;
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(SanitizeUtf8("ok"), "ok");
  EXPECT_EQ(SanitizeUtf8("\xE2\x82"), r);              // truncated 3-byte sequence
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), r + r + r);  // surrogate: each byte
  EXPECT_EQ(SanitizeUtf8("\xC0\xAF"), r + r);          // overlong
  EXPECT_EQ(SanitizeUtf8("\xF0\x9F\x98"
                         "a"),
            r + "a");  // truncated 4-byte sequence
  EXPECT_EQ(SanitizeUtf8("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
}

}  // namespace
}  // namespace quantserve::models
