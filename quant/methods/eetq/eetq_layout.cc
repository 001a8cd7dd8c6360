#include "quant/methods/eetq/eetq_layout.h"

#include <ATen/ATen.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/torch_status.h"

namespace quantserve::quant {
namespace {

const std::vector<int64_t> kRowPermutation = {0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15};
const std::vector<int64_t> kRowPermutationInverse = {0, 1, 4, 5, 8,  9,  12, 13,
                                                     2, 3, 6, 7, 10, 11, 14, 15};
const std::vector<int64_t> kSwapBytes12 = {0, 2, 1, 3};

absl::Status CheckShape(const at::Tensor& t) {
  if (t.scalar_type() != at::kChar || t.dim() != 2 || t.size(0) % 64 != 0 || t.size(1) % 64 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("EETQ's weight layout needs an int8 [in, out] tensor with in and out "
                     "divisible by 64; got ",
                     c10::toString(t.scalar_type()), " [", absl::StrJoin(t.sizes(), ", "), "]"));
  }
  return absl::OkStatus();
}

at::Tensor Index(const std::vector<int64_t>& v) { return at::tensor(v, at::kLong); }

}  // namespace

absl::StatusOr<at::Tensor> EetqPreprocessSm80(const at::Tensor& q) {
  if (absl::Status st = CheckShape(q); !st.ok()) return st;
  const int64_t k = q.size(0);
  const int64_t n = q.size(1);
  at::Tensor out;
  absl::Status st = common::TorchCall("EETQ weight preprocessing", [&] {
    at::Tensor a =
        q.cpu().contiguous().view({k / 16, 16, n}).index_select(1, Index(kRowPermutation));
    at::Tensor b = a.reshape({k, n}).t().contiguous();  // [n, k]
    // Output column pairs (w, c) and 64-row tiles t of 16 words (r) of 4 bytes: [w][c][t][r]
    // becomes [w][t][c][r].
    at::Tensor c = b.view({n / 2, 2, k / 64, 16, 4}).permute({0, 2, 1, 3, 4}).contiguous();
    at::Tensor d = at::bitwise_xor(c.view(at::kByte), 0x80);  // +128 with int8 wrap
    out = d.view({-1, 4}).index_select(1, Index(kSwapBytes12)).view(at::kChar).view({k, n});
  });
  if (!st.ok()) return st;
  return out.to(q.device());
}

absl::StatusOr<at::Tensor> EetqUnpreprocessSm80(const at::Tensor& p) {
  if (absl::Status st = CheckShape(p); !st.ok()) return st;
  const int64_t k = p.size(0);
  const int64_t n = p.size(1);
  at::Tensor out;
  absl::Status st = common::TorchCall("EETQ weight un-preprocessing", [&] {
    at::Tensor d =
        p.cpu().contiguous().view(at::kByte).view({-1, 4}).index_select(1, Index(kSwapBytes12));
    at::Tensor c = at::bitwise_xor(d, 0x80).view(at::kChar);
    at::Tensor b = c.view({n / 2, k / 64, 2, 16, 4}).permute({0, 2, 1, 3, 4}).contiguous();
    at::Tensor a = b.view({n, k}).t().contiguous().view({k / 16, 16, n});
    out = a.index_select(1, Index(kRowPermutationInverse)).reshape({k, n});
  });
  if (!st.ok()) return st;
  return out.to(p.device());
}

}  // namespace quantserve::quant
