#include "relay/toxic.h"

#include <nlohmann/json.hpp>

#include "common/text_escape.h"

#include <array>
#include <utility>

namespace tcpkit::cli {
namespace {

using json = nlohmann::json;

constexpr std::array<std::pair<ToxicType, const char*>, 9> kTypes{{
    {ToxicType::latency, "latency"},
    {ToxicType::bandwidth, "bandwidth"},
    {ToxicType::slow_close, "slow_close"},
    {ToxicType::timeout, "timeout"},
    {ToxicType::reset_peer, "reset_peer"},
    {ToxicType::slicer, "slicer"},
    {ToxicType::limit_data, "limit_data"},
    {ToxicType::frame, "frame"},
    {ToxicType::unplug, "unplug"},
}};

// The API's 400 answers: the error's context is the text sent back.
Error bad(std::string text) {
  return Error(std::make_error_code(std::errc::invalid_argument), std::move(text));
}

// A whole, non-negative number no larger than a day of milliseconds or a
// terabyte, so that later arithmetic on it cannot overflow.
bool read_count(const json& attrs, const char* key, int64_t* out, std::string* why) {
  auto it = attrs.find(key);
  if (it == attrs.end() || it->is_null()) return true;
  if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > kMaxToxicCount) {
    *why = std::string("attribute ") + key + " must be a whole number from 0 to 2^40";
    return false;
  }
  *out = it->get<int64_t>();
  return true;
}

bool read_attributes(const json& attrs, Toxic* t, std::string* why) {
  static constexpr std::pair<const char*, int64_t Toxic::*> kCounts[] = {
      {"latency", &Toxic::latency},
      {"jitter", &Toxic::jitter},
      {"rate", &Toxic::rate},
      {"delay", &Toxic::delay},
      {"timeout", &Toxic::timeout},
      {"average_size", &Toxic::average_size},
      {"size_variation", &Toxic::size_variation},
      {"bytes", &Toxic::bytes},
      {"nth", &Toxic::nth},
      {"after_ms", &Toxic::after_ms},
      {"after_bytes", &Toxic::after_bytes}};
  for (const auto& [key, field] : kCounts) {
    if (!read_count(attrs, key, &(t->*field), why)) return false;
  }
  if (auto it = attrs.find("seed"); it != attrs.end() && !it->is_null()) {
    if (!it->is_number_unsigned()) return *why = "attribute seed must be a whole number", false;
    t->seed = it->get<uint64_t>();
  }
  if (auto it = attrs.find("codec"); it != attrs.end()) {
    if (*it == "line")
      t->codec = FrameCodec::line;
    else if (*it == "length")
      t->codec = FrameCodec::length;
    else
      return *why = "attribute codec must be \"line\" or \"length\"", false;
  }
  if (auto it = attrs.find("action"); it != attrs.end()) {
    if (*it == "drop")
      t->action = FrameAction::drop;
    else if (*it == "duplicate")
      t->action = FrameAction::duplicate;
    else if (*it == "corrupt")
      t->action = FrameAction::corrupt;
    else if (*it == "delay")
      t->action = FrameAction::delay;
    else
      return *why = "attribute action must be drop, duplicate, corrupt or delay", false;
  }
  if (auto it = attrs.find("match"); it != attrs.end()) {
    if (!it->is_string() || it->get<std::string>().size() > 1024)
      return *why = "attribute match must be a string of at most 1024 bytes", false;
    t->match = it->get<std::string>();
  }
  if (auto it = attrs.find("mode"); it != attrs.end()) {
    if (*it != "reset" && *it != "close")
      return *why = "attribute mode must be reset or close", false;
    t->unplug_reset = *it == "reset";
  }
  if (auto it = attrs.find("clients"); it != attrs.end()) {
    if (!it->is_array() || it->size() > 64)
      return *why = "attribute clients must be a list of at most 64 CIDRs", false;
    t->clients.clear();
    for (const auto& item : *it) {
      auto cidr = item.is_string() ? Cidr::parse(item.get<std::string>()) : Result<Cidr>(bad(""));
      if (!cidr) return *why = "attribute clients: not a CIDR (e.g. 127.0.0.0/8)", false;
      t->clients.push_back(*cidr);
    }
  }
  return true;
}

}  // namespace

std::string name_problem(std::string_view name) {
  if (!valid_utf8(name)) return "name must be UTF-8";
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7F) return "name must not hold control characters";
  }
  return "";
}

const char* type_name(ToxicType type) {
  for (const auto& [t, name] : kTypes) {
    if (t == type) return name;
  }
  return "?";
}

const char* stream_name(Stream stream) {
  return stream == Stream::upstream ? "upstream" : "downstream";
}

Result<Toxic> parse_toxic(const json& body, const Toxic* base) {
  if (!body.is_object()) return bad("bad request body");
  Toxic t = base ? *base : Toxic{};
  if (auto it = body.find("type"); it != body.end() && !(base && it->is_null())) {
    bool known = false;
    for (const auto& [type, name] : kTypes) {
      if (*it == name) {
        t.type = type;
        known = true;
      }
    }
    if (!known) return bad("invalid toxic type");
  } else if (!base) {
    return bad("invalid toxic type");
  }
  if (auto it = body.find("stream"); it != body.end() && !it->is_null() && *it != "") {
    if (*it == "upstream")
      t.stream = Stream::upstream;
    else if (*it == "downstream")
      t.stream = Stream::downstream;
    else
      return bad("stream was invalid, can be either upstream or downstream");
  }
  if (auto it = body.find("toxicity"); it != body.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() < 0 || it->get<double>() > 1)
      return bad("toxicity must be a number from 0 to 1");
    t.toxicity = it->get<double>();
  }
  if (auto it = body.find("name"); it != body.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>().size() > 256) return bad("bad request body");
    t.name = it->get<std::string>();
    if (auto why = name_problem(t.name); !why.empty()) return bad(why);
  }
  if (t.name.empty()) t.name = std::string(type_name(t.type)) + "_" + stream_name(t.stream);
  if (auto it = body.find("attributes"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return bad("bad request body");
    std::string why;
    if (!read_attributes(*it, &t, &why)) return bad(why);
  }
  if (t.type == ToxicType::slicer && t.average_size == 0) t.average_size = 1;
  return t;
}

json toxic_json(const Toxic& t) {
  json attrs = json::object();
  switch (t.type) {
    case ToxicType::latency:
      attrs = {{"latency", t.latency}, {"jitter", t.jitter}};
      break;
    case ToxicType::bandwidth:
      attrs = {{"rate", t.rate}};
      break;
    case ToxicType::slow_close:
      attrs = {{"delay", t.delay}};
      break;
    case ToxicType::timeout:
    case ToxicType::reset_peer:
      attrs = {{"timeout", t.timeout}};
      break;
    case ToxicType::slicer:
      attrs = {{"average_size", t.average_size},
               {"size_variation", t.size_variation},
               {"delay", t.delay}};
      break;
    case ToxicType::limit_data:
      attrs = {{"bytes", t.bytes}};
      break;
    case ToxicType::frame: {
      static constexpr const char* kActions[] = {"drop", "duplicate", "corrupt", "delay"};
      attrs = {{"codec", t.codec == FrameCodec::line ? "line" : "length"},
               {"action", kActions[static_cast<int>(t.action)]},
               {"nth", t.nth},
               {"match", t.match},
               {"delay", t.delay}};
      break;
    }
    case ToxicType::unplug:
      attrs = {{"mode", t.unplug_reset ? "reset" : "close"}};
      // -1 means "not by this measure": left out, as a client leaves it out.
      if (t.after_ms >= 0) attrs["after_ms"] = t.after_ms;
      if (t.after_bytes >= 0) attrs["after_bytes"] = t.after_bytes;
      break;
  }
  if (!t.clients.empty()) {
    json list = json::array();
    for (const auto& c : t.clients) list.push_back(c.to_string());
    attrs["clients"] = list;
  }
  if (t.seed) attrs["seed"] = *t.seed;
  return {{"name", t.name},
          {"type", type_name(t.type)},
          {"stream", stream_name(t.stream)},
          {"toxicity", t.toxicity},
          {"attributes", attrs}};
}

}  // namespace tcpkit::cli
