// The program's one JSON writer: log lines, `port --json`, `bench --format
// json` and the status page's /clients.json all go through json_text().
//
// Strings in these documents come from outside (a client's message, a chat
// nick, a TLS server name) and may hold any bytes. nlohmann::json escapes
// quotes and controls; invalid UTF-8 is replaced by U+FFFD, so the output is
// always valid UTF-8 JSON that any parser accepts.
//
// Plain functions on values; any thread.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace tcpkit::cli {

// Keys stay in the order they were added, as the documents list them.
using Json = nlohmann::ordered_json;

// `value` on one line, without a trailing newline.
std::string json_text(const Json& value);

}  // namespace tcpkit::cli
