// The live status page of `tcpkit serve --metrics` (GET /): one HTML
// document with inline style and script, no external assets, so it works
// on a machine without internet access. The script polls /clients.json
// every second and redraws the table of connected clients.
#pragma once

#include <string_view>

namespace tcpkit::cli {

std::string_view status_page_html();

}  // namespace tcpkit::cli
