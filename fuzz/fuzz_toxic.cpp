// Fuzzes the chaos API's toxic parser (tools/tcpkit/relay/toxic.cpp) on any JSON.
// Invariants: never crash or throw; a parsed toxic has a name, a toxicity
// in [0, 1] and counts that cannot overflow; it writes to JSON that parses
// back to the same toxic (the API answers with what a client sends again).
#include <cstddef>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "fuzz_check.h"
#include "relay/toxic.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto body = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  auto toxic = tcpkit::cli::parse_toxic(body);
  if (!toxic) return 0;
  check(!toxic->name.empty(), "a toxic without a name");
  check(toxic->toxicity >= 0 && toxic->toxicity <= 1, "toxicity out of [0, 1]");
  check(toxic->latency <= (int64_t{1} << 40) && toxic->rate <= (int64_t{1} << 40),
        "a count over 2^40");
  auto written = tcpkit::cli::toxic_json(*toxic);
  auto again = tcpkit::cli::parse_toxic(written);
  check(again.ok(), "a toxic's own JSON does not parse");
  check(tcpkit::cli::toxic_json(*again) == written, "a toxic's JSON changes when read back");
  return 0;
}
