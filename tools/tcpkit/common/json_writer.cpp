#include "common/json_writer.h"

namespace tcpkit::cli {

std::string json_text(const Json& value) {
  // error_handler_t::replace: the default, strict, throws on invalid UTF-8,
  // and one bad byte in a nick must not cost the whole document.
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace tcpkit::cli
