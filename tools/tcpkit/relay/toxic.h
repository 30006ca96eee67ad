// Toxic: one fault of `tcpkit relay`'s chaos API, as toxiproxy describes it
// (name, type, stream, toxicity, attributes), plus tcpkit's extensions.
//
// A Toxic is a plain value: the API (relay_api.cpp) parses it from JSON,
// ChaosRegistry keeps the proxy's list, and each RelayPair reads an
// immutable snapshot of that list (ToxicList) in its own loop thread. The
// JSON comes from the network, so parse_toxic() checks every field's type
// and range and answers a message instead of throwing.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tcpkit/cidr.h"
#include "tcpkit/result.h"

namespace tcpkit::cli {

// The largest count a toxic attribute takes (milliseconds, bytes): 2^40,
// far from any overflow of a deadline or a byte sum.
constexpr int64_t kMaxToxicCount = int64_t{1} << 40;

enum class ToxicType {
  latency,     // latency, jitter (ms)
  bandwidth,   // rate (KB/s)
  slow_close,  // delay (ms)
  timeout,     // timeout (ms; 0: hold until removed)
  reset_peer,  // timeout (ms)
  slicer,      // average_size, size_variation (bytes), delay (µs)
  limit_data,  // bytes
  // tcpkit's extensions.
  frame,   // codec, action, nth, match, delay: faults on whole frames
  unplug,  // after_ms, after_bytes, mode: the cable is pulled
};

enum class Stream { upstream, downstream };  // client->server, server->client

enum class FrameCodec { line, length };
enum class FrameAction { drop, duplicate, corrupt, delay };

struct Toxic {
  std::string name;
  ToxicType type = ToxicType::latency;
  Stream stream = Stream::downstream;
  double toxicity = 1.0;
  // Toxiproxy's attributes; each type reads its own.
  int64_t latency = 0;
  int64_t jitter = 0;
  int64_t rate = 0;
  int64_t delay = 0;
  int64_t timeout = 0;
  int64_t average_size = 0;
  int64_t size_variation = 0;
  int64_t bytes = 0;
  // Extensions, documented in docs/chaos.md.
  FrameCodec codec = FrameCodec::line;
  FrameAction action = FrameAction::drop;
  int64_t nth = 0;            // 1-based; 0: every frame (that matches)
  std::string match;          // only frames containing this
  int64_t after_ms = -1;      // unplug: after this long (-1: not by time)
  int64_t after_bytes = -1;   // unplug: after this many bytes both ways (-1: not by bytes)
  bool unplug_reset = true;   // unplug: RST (true) or FIN
  std::vector<Cidr> clients;  // only clients in these ranges (empty: all)
  std::optional<uint64_t> seed;
  // Counts the API's updates of this toxic: a live connection that sees it
  // change restarts the toxic, as toxiproxy does (its timers count anew).
  uint64_t revision = 0;
};

using ToxicList = std::vector<Toxic>;
using ToxicListPtr = std::shared_ptr<const ToxicList>;

// Why `name` cannot name a proxy or a toxic, or "": names travel in URL
// paths, logs and metrics labels, so they are UTF-8 without control
// characters (a name holding "\r\n" could forge lines in all three).
std::string name_problem(std::string_view name);

const char* type_name(ToxicType type);
const char* stream_name(Stream stream);

// A toxic from API JSON. `base` holds the current fields when updating
// (toxiproxy's update merges: fields not given keep their value). The
// message of an error is the API's error text, e.g. "invalid toxic type".
Result<Toxic> parse_toxic(const nlohmann::json& body, const Toxic* base = nullptr);
nlohmann::json toxic_json(const Toxic& toxic);

}  // namespace tcpkit::cli
