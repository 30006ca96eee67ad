// Fuzzes the program's JSON writer (json_text): any bytes in a string, a key
// or nested, and the document out is valid UTF-8 JSON that parses back to the
// same shape, with valid UTF-8 strings kept exactly.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/json_writer.h"
#include "common/text_escape.h"
#include "fuzz_check.h"

using tcpkit::cli::Json;
using tcpkit::cli::json_text;
using tcpkit::cli::valid_utf8;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::string half = input.substr(0, size / 2);
  Json doc = {{"time", "t"},
              {"text", input},
              {"nested", {{"k", half}, {"n", size}}},
              {"list", Json::array({half, input})}};
  doc["key:" + half] = input;  // a key from outside too
  const std::string text = json_text(doc);
  check(valid_utf8(text), "the JSON text is valid UTF-8");
  check(text.find('\n') == std::string::npos, "one line");
  Json back = Json::parse(text, nullptr, false);
  check(!back.is_discarded(), "the JSON text parses");
  check(back["nested"]["n"] == size, "numbers survive");
  if (valid_utf8(input)) check(back["text"] == input, "valid UTF-8 strings survive exactly");
  return 0;
}
