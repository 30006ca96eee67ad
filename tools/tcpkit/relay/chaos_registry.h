// ChaosRegistry: the proxies of `tcpkit relay --api`, each a RelayApp with
// a name, a listen and an upstream address, an enabled flag and a list of
// toxics — toxiproxy's model, driven by its HTTP API (relay_api.cpp).
//
// Owned by relay_cmd.cpp; every method runs in the base loop (the API
// server's loop), so the map needs no lock. A RelayApp's pairs may run on
// I/O threads: toxics reach them through RelayApp::set_toxics(), which
// posts the new immutable list to each pair's loop.
//
// Errors are Error values whose code says the HTTP status (invalid_argument
// 400, no_such_file_or_directory 404, file_exists 409, anything else 500)
// and whose context is toxiproxy's error text.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "relay/relay_app.h"
#include "relay/relay_options.h"
#include "relay/toxic.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/result.h"

namespace tcpkit::cli {

class ChaosRegistry {
 public:
  using json = nlohmann::json;

  // `base` carries what every proxy shares (threads, log, timeouts, seed),
  // and no faults: those of the flags are the flags proxy's alone.
  ChaosRegistry(EventLoop* loop, RelayOptions base);
  ~ChaosRegistry();

  // The proxy given by --listen/--to: its fixed faults (--delay...) stay in
  // its options; the API sees it under `name` and may add toxics to it.
  Result<json> add_flags_proxy(const std::string& name, RelayOptions options,
                               const std::string& listen);

  json list() const;
  Result<json> create(const json& body);
  Result<json> populate(const json& body);
  Result<json> get(const std::string& name) const;
  Result<json> update(const std::string& name, const json& body);
  Result<void> remove(const std::string& name);
  Result<json> toxics(const std::string& proxy) const;
  Result<json> add_toxic(const std::string& proxy, const json& body);
  Result<json> get_toxic(const std::string& proxy, const std::string& toxic) const;
  Result<json> update_toxic(const std::string& proxy, const std::string& toxic, const json& body);
  Result<void> remove_toxic(const std::string& proxy, const std::string& toxic);
  void reset();
  std::string metrics() const;

  // Stops every proxy; `done` runs in the base loop once all have stopped.
  void stop_all(std::function<void()> done);

 private:
  struct Proxy {
    std::string name;
    std::string listen;  // as bound: a port 0 becomes the real one
    std::string upstream;
    bool enabled = true;
    ToxicList toxics;
    RelayOptions options;  // the proxy's template (flags proxy: with its faults)
    std::unique_ptr<RelayApp> app;
  };

  struct Spec {  // a proxy as a request body gives it
    std::string name;
    std::string listen;
    std::string upstream;
    bool enabled = true;
    // The addresses, once checked (a populate list checks them all first):
    // the proxy starts on these, not on a second lookup of the names.
    std::vector<Endpoint> listen_addresses;
    std::vector<Endpoint> upstream_addresses;
  };

  static Result<Spec> read_spec(const json& body, const std::string& where);
  /// `listen` and `upstream` resolved into `spec`'s addresses, or the first
  /// that cannot be.
  static Result<void> resolve_addresses(const std::string& listen, const std::string& upstream,
                                        Spec* spec);
  Result<json> add(const Spec& spec);
  /// Starts the proxy's relay, on `spec`'s addresses when it has them.
  Result<void> start(Proxy& proxy, const Spec* spec = nullptr);
  // Closes the proxy's listener and connections; `why` ("proxy deleted")
  // is each connection's reason in the log.
  void stop(Proxy& proxy, const std::string& why);
  void publish(Proxy& proxy);
  Result<Proxy*> find(const std::string& name);
  Result<const Proxy*> find(const std::string& name) const;
  json proxy_json(const Proxy& proxy) const;
  void retired_one();

  EventLoop* loop_;
  const RelayOptions base_;
  std::map<std::string, std::unique_ptr<Proxy>> proxies_;
  int stopping_ = 0;  // apps stopping, not yet destroyed
  std::function<void()> on_all_stopped_;
};

}  // namespace tcpkit::cli
