#include "relay/relay_app.h"

#include <fmt/core.h>

#include <vector>

#include "relay/relay_pair.h"
#include "tcpkit/buffer.h"
#include "tcpkit/tcp_connection.h"

namespace tcpkit::cli {
namespace {

ServerOptions server_options(const RelayOptions& o) {
  ServerOptions so;
  so.threads = o.threads;
  so.max_connections = o.max_conns;
  so.unix_mode = o.unix_mode;
  so.connection = relay_connection_options(o);
  so.tls = o.client_tls;
  // "[::]" is every interface, IPv4 too, as toxiproxy's (Go's) listener
  // has it: a config written for toxiproxy serves the same clients.
  so.v6_only = false;
  return so;
}

// The pair a client connection belongs to (its context), or null.
RelayPair* pair_of(const TcpConnectionPtr& conn) {
  return conn->context<RelayPair>();
}

}  // namespace

RelayApp::RelayApp(EventLoop* loop, RelayOptions options)
    : loop_(loop),
      options_(std::move(options)),
      log_(options_.log_format),
      server_(loop, server_options(options_)) {
  server_.set_on_connection([this](const TcpConnectionPtr& c) { on_connection(c); });
  server_.set_on_message([](const TcpConnectionPtr& c, Buffer& in) {
    if (auto* pair = pair_of(c)) {
      pair->client_message(in);
    } else {
      in.retrieve_all();
    }
  });
  server_.set_on_peer_closed([](const TcpConnectionPtr& c) {
    if (auto* pair = pair_of(c)) pair->client_peer_closed();
  });
  server_.set_on_write_complete([](const TcpConnectionPtr& c) {
    if (auto* pair = pair_of(c)) pair->client_write_complete();
  });
  if (!options_.access.empty()) {
    server_.set_accept_filter(
        [this](const Endpoint& peer) { return options_.access.permits(peer); });
  }
  server_.set_on_refused([this](const Endpoint& peer, std::error_code why) {
    if (options_.quiet) return;
    const bool not_allowed = why == Errc::not_allowed;
    std::string reason = not_allowed ? "refused: not allowed" : "refused: too many connections";
    std::string detail = not_allowed ? "" : fmt::format(" (--max-conns {})", options_.max_conns);
    log_.log("disconnect", fmt::format("disconnect {}: {}{}", peer.to_string(), reason, detail),
             {Logger::str("peer", peer.to_string()), Logger::str("reason", reason)});
  });
}

RelayApp::~RelayApp() = default;

Result<void> RelayApp::listen() {
  for (const auto& address : options_.listen) {
    if (auto r = server_.listen(address); !r) return r;
  }
  return {};
}

Result<void> RelayApp::start() {
  if (auto r = server_.start(); !r) return r;
  // "TLS -> TLS" when both ends are encrypted: the relay sees the plaintext.
  const char* from = options_.client_tls ? "TLS" : "TCP";
  const char* to = options_.upstream_tls ? "TLS" : "TCP";
  const std::string tls_note =
      options_.client_tls || options_.upstream_tls ? fmt::format(" ({} -> {})", from, to) : "";
  for (const auto& ep : server_.listen_endpoints()) {
    log_.log(
        "listening",
        fmt::format("listening on {}, forwarding to {}{}", ep.to_string(), options_.upstream_text,
                    tls_note),
        {Logger::str("address", ep.to_string()), Logger::str("upstream", options_.upstream_text),
         Logger::str("client_tls", options_.client_tls ? "on" : "off"),
         Logger::str("upstream_tls", options_.upstream_tls ? "on" : "off")});
  }
  return {};
}

void RelayApp::on_connection(const TcpConnectionPtr& conn) {
  if (!conn->connected()) {
    if (auto* pair = pair_of(conn)) pair->client_closed();
    return;
  }
  RelayPair::Hooks hooks;
  hooks.on_connected = [this](const RelayPair& pair) { pair_connected(pair); };
  hooks.on_finished = [this](const std::shared_ptr<RelayPair>& pair) { pair_finished(pair); };
  const uint64_t sequence = relayed_.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<RelayPair> pair;
  {
    // One lock for the snapshot and the registration: set_toxics() either
    // ran before (the pair starts with its list) or reaches the pair.
    std::lock_guard lock(mutex_);
    pair = std::make_shared<RelayPair>(options_, conn, std::move(hooks), sequence, toxics_);
    pairs_.insert(pair);
  }
  conn->share_context(pair);
  pair->start();
}

void RelayApp::pair_connected(const RelayPair& pair) {
  if (options_.quiet) return;
  log_.log("connect", fmt::format("connect {} -> {}", pair.peer(), pair.upstream()),
           {Logger::str("peer", pair.peer()), Logger::str("upstream", pair.upstream())});
}

// In the pair's loop, once both of its sides are closed.
void RelayApp::pair_finished(const std::shared_ptr<RelayPair>& pair) {
  bytes_up_.fetch_add(pair->bytes_up(), std::memory_order_relaxed);
  bytes_down_.fetch_add(pair->bytes_down(), std::memory_order_relaxed);
  if (!options_.quiet) {
    log_.log("disconnect",
             fmt::format("disconnect {}: {} (bytes up {}, down {})", pair->peer(), pair->reason(),
                         pair->bytes_up(), pair->bytes_down()),
             {Logger::str("peer", pair->peer()), Logger::str("upstream", pair->upstream()),
              Logger::str("reason", pair->reason()), Logger::num("bytes_up", pair->bytes_up()),
              Logger::num("bytes_down", pair->bytes_down())});
  }
  // Once the last pair leaves the registry, a stopping app may be
  // destroyed by the base loop at any moment (the chaos API deletes it):
  // leaving is the last thing done here with `this`, and the check that
  // follows runs in the base loop, which tells by `alive` whether it still may.
  // stop() sets stopping_ under the same lock, so either it comes after
  // (and its own check sees this pair gone) or this pair asks again.
  EventLoop* base = loop_;
  std::weak_ptr<int> alive = alive_;
  bool stopping = false;
  {
    std::lock_guard lock(mutex_);
    pairs_.erase(pair);
    stopping = stopping_.load(std::memory_order_acquire);
  }
  if (stopping) {
    base->queue_in_loop([this, alive] {
      if (alive.lock()) maybe_quit();
    });
  }
}

// Each open pair hears why it ends, before the drain deadline closes it
// (which would read as a timeout); answers how many there are.
size_t RelayApp::note_stopping(const std::string& why) {
  std::vector<std::shared_ptr<RelayPair>> open;
  {
    std::lock_guard lock(mutex_);
    open.assign(pairs_.begin(), pairs_.end());
  }
  for (const auto& pair : open)
    pair->loop()->run_in_loop([pair, why] { pair->note_stopping(why); });
  return open.size();
}

void RelayApp::begin_stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_.exchange(true)) return;
  }
  const size_t open = note_stopping("relay stopping");
  log_.log("stopping", fmt::format("stopping: no new connections; draining {} connections", open),
           {Logger::num("connections", open)});
  // The server shuts its clients down and force-closes them after the
  // deadline; each pair then takes its upstream down with it.
  server_.stop(options_.drain_timeout, [this] {
    server_stopped_ = true;
    maybe_quit();
  });
}

void RelayApp::stop(std::chrono::milliseconds drain, const std::string& why,
                    std::function<void()> on_stopped) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_.exchange(true)) return;
  }
  note_stopping(why);
  on_stopped_ = std::move(on_stopped);
  server_.stop(drain, [this] {
    server_stopped_ = true;
    maybe_quit();
  });
}

void RelayApp::set_toxics(const ToxicListPtr& toxics) {
  std::vector<std::shared_ptr<RelayPair>> open;
  {
    std::lock_guard lock(mutex_);
    toxics_ = toxics;
    open.assign(pairs_.begin(), pairs_.end());
  }
  for (const auto& pair : open)
    pair->loop()->run_in_loop([pair, toxics] { pair->set_toxics(toxics); });
}

uint64_t RelayApp::open_pairs() {
  std::lock_guard lock(mutex_);
  return pairs_.size();
}

void RelayApp::maybe_quit() {
  if (!server_stopped_ || quitting_) return;
  {
    std::lock_guard lock(mutex_);
    if (!pairs_.empty()) return;
  }
  if (on_stopped_) {
    quitting_ = true;
    on_stopped_();  // may destroy this app: nothing after it
    return;
  }
  log_.log("stopped",
           fmt::format("stopped: relayed {} connections, {} bytes up, {} bytes down",
                       relayed_.load(), bytes_up_.load(), bytes_down_.load()),
           {Logger::num("connections", relayed_.load()), Logger::num("bytes_up", bytes_up_.load()),
            Logger::num("bytes_down", bytes_down_.load())});
  quitting_ = true;
  loop_->quit();
}

}  // namespace tcpkit::cli
