#include "cli/compare_html.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace quantserve::cli {
namespace {

// Distinct colours for up to 10 variants, then they repeat.
constexpr const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                    "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"};

std::string Escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Plot geometry: a 640 x 360 canvas with margins for the axes.
constexpr double kW = 640, kH = 360, kLeft = 70, kRight = 20, kTop = 20, kBottom = 50;

// x in [lo, hi] on a log10 axis -> pixels.
double LogX(double x, double lo, double hi) {
  return kLeft + (std::log10(x) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) *
                     (kW - kLeft - kRight);
}
double LinY(double y, double lo, double hi) {
  return kH - kBottom - (y - lo) / (hi - lo) * (kH - kTop - kBottom);
}

std::string Axes(const std::string& x_label, const std::string& y_label) {
  return absl::StrFormat(
      "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#333'/>"
      "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#333'/>"
      "<text x='%g' y='%g' text-anchor='middle'>%s</text>"
      "<text x='14' y='%g' text-anchor='middle' transform='rotate(-90 14 %g)'>%s</text>",
      kLeft, kH - kBottom, kW - kRight, kH - kBottom, kLeft, kTop, kLeft, kH - kBottom,
      (kLeft + kW - kRight) / 2, kH - 12, x_label, (kTop + kH - kBottom) / 2,
      (kTop + kH - kBottom) / 2, y_label);
}

// Decade ticks of a log axis over [lo, hi].
std::string LogTicks(double lo, double hi) {
  std::string out;
  for (int e = static_cast<int>(std::floor(std::log10(lo))); e <= std::ceil(std::log10(hi)); ++e) {
    const double v = std::pow(10.0, e);
    if (v < lo || v > hi) continue;
    const double x = LogX(v, lo, hi);
    absl::StrAppendFormat(&out,
                          "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#ccc'/>"
                          "<text x='%g' y='%g' text-anchor='middle'>1e%d</text>",
                          x, kTop, x, kH - kBottom, x, kH - kBottom + 16, e);
  }
  return out;
}

// The cumulative distribution of each candidate's per-token KL (log x axis).
std::string KlDistribution(const v1::CompareReport& report) {
  constexpr double kFloor = 1e-6;  // KL below this is drawn at it (log axis)
  double hi = 1e-3;
  for (int i = 1; i < report.variants_size(); ++i) {
    for (float kl : report.variants(i).kl_per_token()) hi = std::max(hi, static_cast<double>(kl));
  }
  hi = std::pow(10.0, std::ceil(std::log10(hi)));
  std::string svg = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' width='%g' height='%g' font-size='12'>", kW, kH);
  svg += LogTicks(kFloor, hi);
  for (double q : {0.25, 0.5, 0.75, 1.0}) {
    const double y = LinY(q, 0, 1);
    absl::StrAppendFormat(&svg,
                          "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#eee'/>"
                          "<text x='%g' y='%g' text-anchor='end'>%g</text>",
                          kLeft, y, kW - kRight, y, kLeft - 6, y + 4, q);
  }
  svg += Axes("KL(baseline || variant) per token, nats (log)", "share of tokens at or below");
  for (int i = 1; i < report.variants_size(); ++i) {
    std::vector<float> kl(report.variants(i).kl_per_token().begin(),
                          report.variants(i).kl_per_token().end());
    if (kl.empty()) continue;
    std::sort(kl.begin(), kl.end());
    std::string points;
    // At most ~400 points per curve keeps the page small for long texts.
    const size_t step = std::max<size_t>(1, kl.size() / 400);
    for (size_t j = 0; j < kl.size(); j += step) {
      const double x = LogX(std::clamp(static_cast<double>(kl[j]), kFloor, hi), kFloor, hi);
      absl::StrAppendFormat(&points, "%.1f,%.1f ", x,
                            LinY(static_cast<double>(j + 1) / kl.size(), 0, 1));
    }
    absl::StrAppendFormat(&points, "%.1f,%.1f", LogX(std::clamp<double>(kl.back(), kFloor, hi),
                                                     kFloor, hi),
                          LinY(1, 0, 1));
    absl::StrAppendFormat(
        &svg, "<polyline class='kl' fill='none' stroke-width='2' stroke='%s' points='%s'/>",
        kColours[(i - 1) % 10], points);
    absl::StrAppendFormat(&svg, "<text x='%g' y='%g' fill='%s'>%s</text>", kLeft + 10,
                          kTop + 14 * i, kColours[(i - 1) % 10],
                          Escape(report.variants(i).model()));
  }
  return svg + "</svg>";
}

// Quality against speed: x = decode speed ratio to the baseline, y = mean KL (log), circle
// area proportional to the memory footprint.
std::string QualityVsSpeed(const v1::CompareReport& report) {
  constexpr double kFloor = 1e-6;
  double x_hi = 1.0, y_hi = 1e-3, mem_hi = 1;
  for (int i = 1; i < report.variants_size(); ++i) {
    const auto& v = report.variants(i);
    x_hi = std::max(x_hi, v.decode_ratio());
    y_hi = std::max(y_hi, v.kl_mean());
  }
  for (const auto& v : report.variants()) {
    mem_hi = std::max(mem_hi, static_cast<double>(v.memory_footprint_bytes()));
  }
  x_hi = std::ceil(x_hi * 1.1 * 2) / 2;
  y_hi = std::pow(10.0, std::ceil(std::log10(y_hi)));
  std::string svg = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' width='%g' height='%g' font-size='12'>", kW, kH);
  auto px = [&](double x) { return kLeft + x / x_hi * (kW - kLeft - kRight); };
  auto py = [&](double y) {  // log axis, bottom = kFloor
    return kH - kBottom - (std::log10(std::max(y, kFloor)) - std::log10(kFloor)) /
                              (std::log10(y_hi) - std::log10(kFloor)) * (kH - kTop - kBottom);
  };
  for (double x = 0.5; x <= x_hi; x += 0.5) {
    absl::StrAppendFormat(&svg,
                          "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#eee'/>"
                          "<text x='%g' y='%g' text-anchor='middle'>%gx</text>",
                          px(x), kTop, px(x), kH - kBottom, px(x), kH - kBottom + 16, x);
  }
  for (int e = -6; std::pow(10.0, e) <= y_hi; ++e) {
    absl::StrAppendFormat(&svg,
                          "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#eee'/>"
                          "<text x='%g' y='%g' text-anchor='end'>1e%d</text>",
                          kLeft, py(std::pow(10.0, e)), kW - kRight, py(std::pow(10.0, e)),
                          kLeft - 6, py(std::pow(10.0, e)) + 4, e);
  }
  svg += Axes("decode speed / baseline's", "mean KL, nats (log)");
  for (int i = 1; i < report.variants_size(); ++i) {
    const auto& v = report.variants(i);
    const double r =
        4 + 16 * std::sqrt(static_cast<double>(v.memory_footprint_bytes()) / mem_hi);
    absl::StrAppendFormat(&svg,
                          "<circle class='variant' cx='%.1f' cy='%.1f' r='%.1f' fill='%s' "
                          "fill-opacity='0.5' stroke='%s'><title>%s: %.1f MB</title></circle>"
                          "<text x='%.1f' y='%.1f'>%s</text>",
                          px(v.decode_ratio()), py(v.kl_mean()), r, kColours[(i - 1) % 10],
                          kColours[(i - 1) % 10], Escape(v.model()),
                          v.memory_footprint_bytes() / 1e6, px(v.decode_ratio()) + r + 2,
                          py(v.kl_mean()) + 4, Escape(v.model()));
  }
  return svg + "</svg>";
}

}  // namespace

std::string CompareReportHtml(const v1::CompareReport& report) {
  std::string html =
      "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
      "<title>quantserve compare</title><style>"
      "body{font-family:sans-serif;margin:24px;color:#222}"
      "table{border-collapse:collapse}td,th{padding:4px 8px;border-bottom:1px solid #ddd;"
      "text-align:right}td:first-child,th:first-child,td:nth-child(2){text-align:left}"
      "figure{display:inline-block;margin:16px 24px 0 0}"
      "</style></head><body>";
  const std::string baseline = Escape(report.baseline());
  absl::StrAppendFormat(&html,
                        "<h1>Compare against %s</h1><p>%d tokens scored over %d texts "
                        "(load average %.2f).</p>",
                        baseline, report.tokens(), report.texts(), report.load_average());
  html +=
      "<table><tr><th>variant</th><th>method</th><th>PPL</th><th>PPL ratio</th>"
      "<th>KL mean</th><th>KL p99</th><th>KL max</th><th>top-1 %</th><th>greedy</th>"
      "<th>MB</th><th>prefill tok/s</th><th>decode tok/s</th><th>decode ×</th></tr>";
  for (const v1::CompareVariant& v : report.variants()) {
    absl::StrAppendFormat(
        &html,
        "<tr class='variant'><td>%s</td><td>%s</td><td>%.4f</td><td>%.4f ± %.4f</td>"
        "<td>%.5f ± %.5f</td><td>%.4f</td><td>%.4f</td><td>%.2f</td><td>%d/%d</td>"
        "<td>%.1f</td><td>%.1f</td><td>%.2f</td><td>%.2f×</td></tr>",
        Escape(v.model()), Escape(v.quant_method()), v.perplexity(), v.ppl_ratio(),
        v.ppl_ratio_err(), v.kl_mean(), v.kl_err(), v.kl_p99(), v.kl_max(),
        100 * v.same_top1(), v.greedy_agreement_tokens(), v.continuation_tokens(),
        v.memory_footprint_bytes() / 1e6, v.prefill_tokens_per_second(),
        v.decode_tokens_per_second(), v.decode_ratio());
  }
  html += "</table>";
  html += "<figure>" + KlDistribution(report) +
          "<figcaption>Per-token KL divergence from the baseline: the further left and "
          "the steeper, the closer the variant.</figcaption></figure>";
  html += "<figure>" + QualityVsSpeed(report) +
          "<figcaption>Quality against speed; the circle's area is the memory footprint. "
          "Bottom right is best.</figcaption></figure>";
  return html + "</body></html>\n";
}

}  // namespace quantserve::cli
