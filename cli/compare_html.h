#pragma once
// A Compare report as one self-contained HTML page (no scripts, no external files): the table
// the CLI prints, the per-token KL divergence of each variant as a cumulative distribution, and
// quality against speed (KL mean against decode speed ratio, the circle's area the memory).

#include <string>

#include "quantserve/v1/inference_service.pb.h"

namespace quantserve::cli {

std::string CompareReportHtml(const v1::CompareReport& report);

}  // namespace quantserve::cli
