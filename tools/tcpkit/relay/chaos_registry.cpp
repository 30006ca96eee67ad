#include "relay/chaos_registry.h"

#include <fmt/core.h>

#include <algorithm>

#include "tcpkit/endpoint.h"

namespace tcpkit::cli {
namespace {

using json = nlohmann::json;

Error api_error(std::errc code, std::string text) {
  return Error(std::make_error_code(code), std::move(text));
}

// HOST:PORT, or unix:PATH as --listen and --to take it. A listen address
// (`allow_port_zero`) may also be ":PORT", every interface, as in toxiproxy.
Result<std::vector<Endpoint>> resolve(const std::string& text, bool allow_port_zero) {
  if (Endpoint::names_unix_socket(text)) {
    auto unix_socket = Endpoint::unix_socket(text.substr(Endpoint::kUnixPrefix.size()));
    if (!unix_socket)
      return api_error(std::errc::invalid_argument,
                       fmt::format("{}: {}", text, unix_socket.error().message()));
    return std::vector<Endpoint>{std::move(*unix_socket)};
  }
  // ":PORT", as toxiproxy (Go) reads it: every interface.
  const bool every_interface = allow_port_zero && text.size() > 1 && text[0] == ':' &&
                               text.find(':', 1) == std::string::npos;
  auto split = Endpoint::split_host_port(every_interface ? "[::]" + text : text);
  if (!split)
    return api_error(std::errc::invalid_argument,
                     fmt::format("{}: {}", text, split.error().message()));
  if (split->second == 0 && !allow_port_zero)
    return api_error(std::errc::invalid_argument,
                     fmt::format("{}: port 0 cannot be connected to", text));
  auto addresses = Endpoint::resolve(split->first, split->second);
  if (!addresses)
    return api_error(std::errc::invalid_argument,
                     fmt::format("{}: {}", text, addresses.error().message()));
  return std::move(*addresses);
}

// A string field of a proxy body, or "" when absent; false when it is there
// but not a string.
bool read_string(const json& body, const char* key, std::string* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return true;
  if (!it->is_string() || it->get<std::string>().size() > 1024) return false;
  *out = it->get<std::string>();
  return true;
}

// The "enabled" field into *out when it is there; false when it is there
// but not a boolean (toxiproxy's decoder refuses "false" and 0 too).
bool read_enabled(const json& body, bool* out) {
  auto it = body.find("enabled");
  if (it == body.end() || it->is_null()) return true;
  if (!it->is_boolean()) return false;
  *out = it->get<bool>();
  return true;
}

constexpr const char* kNotABoolean = "bad request body: enabled must be true or false";

// The most proxies one /populate (or --config) may hold.
constexpr size_t kMaxPopulate = 1000;

// Prometheus label values come from API clients: escape them.
std::string label(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

ChaosRegistry::ChaosRegistry(EventLoop* loop, RelayOptions base)
    : loop_(loop), base_(std::move(base)) {}

ChaosRegistry::~ChaosRegistry() = default;

Result<json> ChaosRegistry::add_flags_proxy(const std::string& name, RelayOptions options,
                                            const std::string& listen) {
  auto proxy = std::make_unique<Proxy>();
  proxy->name = name;
  proxy->listen = listen;
  proxy->upstream = options.upstream_text;
  proxy->options = std::move(options);
  if (auto r = start(*proxy); !r) return r.error();
  json j = proxy_json(*proxy);
  proxies_[name] = std::move(proxy);
  return j;
}

Result<void> ChaosRegistry::start(Proxy& proxy, const Spec* spec) {
  RelayOptions o = proxy.options;
  // The flags' proxy comes with its addresses resolved (and checked) by
  // relay_cmd.cpp, and so does a proxy of a populate list; the API's
  // others are resolved here.
  if (o.listen.empty() || o.upstream.empty()) {
    Spec resolved;
    if (!spec || spec->listen_addresses.empty() || spec->upstream_addresses.empty()) {
      if (auto r = resolve_addresses(proxy.listen, proxy.upstream, &resolved); !r) return r;
      spec = &resolved;
    }
    o.listen = spec->listen_addresses;
    o.upstream = spec->upstream_addresses;
  }
  o.upstream_text = proxy.upstream;
  auto app = std::make_unique<RelayApp>(loop_, std::move(o));
  if (auto r = app->listen(); !r)
    return api_error(std::errc::io_error,
                     fmt::format("listen {}: {}", proxy.listen, r.error().message()));
  if (auto r = app->start(); !r) return api_error(std::errc::io_error, r.error().message());
  // Port 0 picked a port: clients must find the proxy there from now on,
  // also after it is disabled and enabled again.
  auto bound = app->listen_endpoints();
  if (!bound.empty()) proxy.listen = bound.front().to_string();
  proxy.app = std::move(app);
  publish(proxy);
  return {};
}

// Toxiproxy closes every connection of a proxy that is disabled, deleted or
// moved; so does this, at once (no drain). The app is destroyed only after
// its server's last callback has returned.
void ChaosRegistry::stop(Proxy& proxy, const std::string& why) {
  if (!proxy.app) return;
  auto holder = std::make_shared<std::unique_ptr<RelayApp>>(std::move(proxy.app));
  ++stopping_;
  (*holder)->stop(std::chrono::milliseconds(0), why, [this, holder] {
    loop_->queue_in_loop([this, holder] {
      holder->reset();
      retired_one();
    });
  });
}

void ChaosRegistry::retired_one() {
  if (--stopping_ == 0 && on_all_stopped_) {
    auto done = std::move(on_all_stopped_);
    on_all_stopped_ = nullptr;
    done();
  }
}

void ChaosRegistry::publish(Proxy& proxy) {
  if (proxy.app) proxy.app->set_toxics(std::make_shared<const ToxicList>(proxy.toxics));
}

Result<ChaosRegistry::Proxy*> ChaosRegistry::find(const std::string& name) {
  auto it = proxies_.find(name);
  if (it == proxies_.end())
    return api_error(std::errc::no_such_file_or_directory, "proxy not found");
  return it->second.get();
}

Result<const ChaosRegistry::Proxy*> ChaosRegistry::find(const std::string& name) const {
  auto it = proxies_.find(name);
  if (it == proxies_.end())
    return api_error(std::errc::no_such_file_or_directory, "proxy not found");
  return static_cast<const Proxy*>(it->second.get());
}

json ChaosRegistry::proxy_json(const Proxy& p) const {
  json toxics = json::array();
  for (const auto& t : p.toxics) toxics.push_back(toxic_json(t));
  return {{"name", p.name},
          {"listen", p.listen},
          {"upstream", p.upstream},
          {"enabled", p.enabled},
          {"toxics", toxics}};
}

json ChaosRegistry::list() const {
  json all = json::object();
  for (const auto& [name, p] : proxies_) all[name] = proxy_json(*p);
  return all;
}

// A proxy body's fields, checked, as toxiproxy checks them: `where` ends
// the messages (" at proxy 2" in a populate list).
Result<ChaosRegistry::Spec> ChaosRegistry::read_spec(const json& body, const std::string& where) {
  Spec spec;
  if (!body.is_object() || !read_string(body, "name", &spec.name) ||
      !read_string(body, "listen", &spec.listen) || !read_string(body, "upstream", &spec.upstream))
    return api_error(std::errc::invalid_argument, "bad request body" + where);
  if (!read_enabled(body, &spec.enabled))
    return api_error(std::errc::invalid_argument, std::string(kNotABoolean) + where);
  if (spec.name.empty())
    return api_error(std::errc::invalid_argument, "missing required field: name" + where);
  if (auto why = name_problem(spec.name); !why.empty())
    return api_error(std::errc::invalid_argument, why + where);
  if (spec.upstream.empty())
    return api_error(std::errc::invalid_argument, "missing required field: upstream" + where);
  if (spec.listen.empty()) spec.listen = "127.0.0.1:0";
  return spec;
}

// `listen` and `upstream` resolved into `spec`'s addresses, or the first
// that cannot be.
Result<void> ChaosRegistry::resolve_addresses(const std::string& listen,
                                              const std::string& upstream, Spec* spec) {
  auto listen_addresses = resolve(listen, true);
  if (!listen_addresses) return listen_addresses.error();
  auto upstream_addresses = resolve(upstream, false);
  if (!upstream_addresses) return upstream_addresses.error();
  spec->listen_addresses = std::move(*listen_addresses);
  spec->upstream_addresses = std::move(*upstream_addresses);
  return {};
}

Result<json> ChaosRegistry::create(const json& body) {
  auto spec = read_spec(body, "");
  if (!spec) return spec.error();
  if (proxies_.count(spec->name)) return api_error(std::errc::file_exists, "proxy already exists");
  return add(*spec);
}

Result<json> ChaosRegistry::add(const Spec& spec) {
  auto proxy = std::make_unique<Proxy>();
  proxy->name = spec.name;
  proxy->listen = spec.listen;
  proxy->upstream = spec.upstream;
  proxy->enabled = spec.enabled;
  proxy->options = base_;
  if (proxy->enabled) {
    if (auto r = start(*proxy, &spec); !r) return r.error();
  }
  json j = proxy_json(*proxy);
  proxies_[proxy->name] = std::move(proxy);
  return j;
}

// Every entry is checked (fields, names, the enabled ones' addresses)
// before anything changes; if a listen then fails, the proxies this list
// created are removed again and those it replaced put back, so a failed
// request leaves no half of itself.
Result<json> ChaosRegistry::populate(const json& body) {
  if (!body.is_array()) return api_error(std::errc::invalid_argument, "bad request body");
  if (body.size() > kMaxPopulate)
    return api_error(std::errc::invalid_argument,
                     fmt::format("more than {} proxies in one request", kMaxPopulate));
  std::vector<Spec> specs;
  for (const auto& item : body) {
    const std::string where = fmt::format(" at proxy {}", specs.size() + 1);
    auto spec = read_spec(item, where);
    if (!spec) return spec.error();
    for (const Spec& earlier : specs) {
      if (earlier.name == spec->name)
        return api_error(std::errc::invalid_argument,
                         fmt::format("duplicate proxy name \"{}\"", spec->name));
    }
    if (spec->enabled) {
      if (auto r = resolve_addresses(spec->listen, spec->upstream, &*spec); !r)
        return api_error(std::errc::invalid_argument, r.error().context() + where);
    }
    specs.push_back(std::move(*spec));
  }
  // In the list's order, as toxiproxy goes: a proxy that moves off a port
  // frees it for a later entry. One it replaces (toxiproxy replaces a
  // proxy of the same name whose addresses differ) is kept aside, and put
  // back with its toxics if a later entry fails; its connections are
  // closed either way.
  json created = json::array();
  std::vector<std::string> added;
  std::vector<std::unique_ptr<Proxy>> replaced;
  auto undo = [&] {
    for (const auto& name : added) (void)remove(name);
    for (auto& old : replaced) {
      Proxy& p = *old;
      proxies_[p.name] = std::move(old);
      if (p.enabled) (void)start(p);  // where it listened: free again
    }
  };
  for (const Spec& spec : specs) {
    if (auto it = proxies_.find(spec.name); it != proxies_.end()) {
      if (it->second->listen == spec.listen && it->second->upstream == spec.upstream) {
        created.push_back(proxy_json(*it->second));
        continue;
      }
      stop(*it->second, "proxy replaced");
      replaced.push_back(std::move(proxies_.extract(it).mapped()));
    }
    auto r = add(spec);
    if (!r) {
      undo();
      return r.error();
    }
    added.push_back(spec.name);
    created.push_back(std::move(*r));
  }
  return json{{"proxies", created}};
}

Result<json> ChaosRegistry::get(const std::string& name) const {
  auto p = find(name);
  if (!p) return p.error();
  return proxy_json(**p);
}

Result<json> ChaosRegistry::update(const std::string& name, const json& body) {
  auto found = find(name);
  if (!found) return found.error();
  Proxy& p = **found;
  if (!body.is_object()) return api_error(std::errc::invalid_argument, "bad request body");
  std::string listen = p.listen, upstream = p.upstream;
  if (!read_string(body, "listen", &listen) || !read_string(body, "upstream", &upstream))
    return api_error(std::errc::invalid_argument, "bad request body");
  bool enabled = p.enabled;
  if (!read_enabled(body, &enabled)) return api_error(std::errc::invalid_argument, kNotABoolean);
  const bool moved = listen != p.listen || upstream != p.upstream;
  // New addresses are checked before anything changes: a refused request
  // leaves the proxy as it was, running.
  Spec checked;
  if (moved) {
    if (auto r = resolve_addresses(listen, upstream, &checked); !r) return r.error();
  }
  if (moved || !enabled) stop(p, moved ? "proxy moved" : "proxy disabled");
  if (moved) {
    p.options.listen.clear();
    p.options.upstream.clear();
  }
  p.listen = listen;
  p.upstream = upstream;
  p.enabled = enabled;
  if (enabled && !p.app) {
    if (auto r = start(p, moved ? &checked : nullptr); !r) {
      p.enabled = false;
      return r.error();
    }
  }
  return proxy_json(p);
}

Result<void> ChaosRegistry::remove(const std::string& name) {
  auto found = find(name);
  if (!found) return found.error();
  stop(**found, "proxy deleted");
  proxies_.erase(name);
  return {};
}

Result<json> ChaosRegistry::toxics(const std::string& proxy) const {
  auto p = find(proxy);
  if (!p) return p.error();
  json list = json::array();
  for (const auto& t : (*p)->toxics) list.push_back(toxic_json(t));
  return list;
}

Result<json> ChaosRegistry::add_toxic(const std::string& proxy, const json& body) {
  auto found = find(proxy);
  if (!found) return found.error();
  Proxy& p = **found;
  auto toxic = parse_toxic(body);
  if (!toxic) return toxic.error();
  auto same = [&](const Toxic& t) { return t.name == toxic->name; };
  if (std::any_of(p.toxics.begin(), p.toxics.end(), same))
    return api_error(std::errc::file_exists, "toxic already exists");
  if (p.toxics.size() >= 64)
    return api_error(std::errc::invalid_argument, "at most 64 toxics per proxy");
  p.toxics.push_back(*toxic);
  publish(p);
  return toxic_json(*toxic);
}

Result<json> ChaosRegistry::get_toxic(const std::string& proxy, const std::string& toxic) const {
  auto p = find(proxy);
  if (!p) return p.error();
  for (const auto& t : (*p)->toxics) {
    if (t.name == toxic) return toxic_json(t);
  }
  return api_error(std::errc::no_such_file_or_directory, "toxic not found");
}

Result<json> ChaosRegistry::update_toxic(const std::string& proxy, const std::string& toxic,
                                         const json& body) {
  auto found = find(proxy);
  if (!found) return found.error();
  Proxy& p = **found;
  for (auto& t : p.toxics) {
    if (t.name != toxic) continue;
    // As toxiproxy: a body that is not an object is refused, not ignored.
    if (!body.is_object()) return api_error(std::errc::invalid_argument, "bad request body");
    // The name and the type stay: an update changes attributes and toxicity.
    json merged = body;
    merged["name"] = t.name;
    merged["type"] = type_name(t.type);
    auto updated = parse_toxic(merged, &t);
    if (!updated) return updated.error();
    t = *updated;
    ++t.revision;  // live connections restart it
    publish(p);
    return toxic_json(t);
  }
  return api_error(std::errc::no_such_file_or_directory, "toxic not found");
}

Result<void> ChaosRegistry::remove_toxic(const std::string& proxy, const std::string& toxic) {
  auto found = find(proxy);
  if (!found) return found.error();
  Proxy& p = **found;
  auto it = std::find_if(p.toxics.begin(), p.toxics.end(),
                         [&](const Toxic& t) { return t.name == toxic; });
  if (it == p.toxics.end())
    return api_error(std::errc::no_such_file_or_directory, "toxic not found");
  p.toxics.erase(it);
  publish(p);
  return {};
}

void ChaosRegistry::reset() {
  for (auto& [name, p] : proxies_) {
    p->toxics.clear();
    publish(*p);
    if (!p->enabled) {
      p->enabled = true;
      if (!start(*p)) p->enabled = false;
    }
  }
}

std::string ChaosRegistry::metrics() const {
  std::string out =
      "# HELP tcpkit_chaos_proxies Proxies defined.\n# TYPE tcpkit_chaos_proxies gauge\n";
  out += fmt::format("tcpkit_chaos_proxies {}\n", proxies_.size());
  out +=
      "# HELP tcpkit_chaos_connections_total Clients accepted by a proxy since it was last "
      "enabled.\n"
      "# TYPE tcpkit_chaos_connections_total counter\n";
  for (const auto& [name, p] : proxies_)
    out += fmt::format("tcpkit_chaos_connections_total{{proxy=\"{}\"}} {}\n", label(name),
                       p->app ? p->app->relayed() : 0);
  out +=
      "# HELP tcpkit_chaos_connections_open Pairs open now.\n# TYPE tcpkit_chaos_connections_open "
      "gauge\n";
  for (const auto& [name, p] : proxies_)
    out += fmt::format("tcpkit_chaos_connections_open{{proxy=\"{}\"}} {}\n", label(name),
                       p->app ? p->app->open_pairs() : 0);
  out +=
      "# HELP tcpkit_chaos_bytes_total Bytes forwarded by finished pairs.\n# TYPE "
      "tcpkit_chaos_bytes_total counter\n";
  for (const auto& [name, p] : proxies_) {
    out += fmt::format("tcpkit_chaos_bytes_total{{proxy=\"{}\",direction=\"upstream\"}} {}\n",
                       label(name), p->app ? p->app->bytes_up() : 0);
    out += fmt::format("tcpkit_chaos_bytes_total{{proxy=\"{}\",direction=\"downstream\"}} {}\n",
                       label(name), p->app ? p->app->bytes_down() : 0);
  }
  out += "# HELP tcpkit_chaos_toxics Toxics on a proxy.\n# TYPE tcpkit_chaos_toxics gauge\n";
  for (const auto& [name, p] : proxies_)
    out += fmt::format("tcpkit_chaos_toxics{{proxy=\"{}\"}} {}\n", label(name), p->toxics.size());
  return out;
}

void ChaosRegistry::stop_all(std::function<void()> done) {
  on_all_stopped_ = std::move(done);
  ++stopping_;  // held until every stop() below is counted
  for (auto& [name, p] : proxies_) stop(*p, "relay stopping");
  retired_one();
}

}  // namespace tcpkit::cli
