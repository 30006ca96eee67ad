#include "connector.h"

#include <cerrno>

#include "sys.h"
#include "tcpkit/detail/channel.h"

namespace tcpkit {
namespace {

// The retry jitter's seed: each connector its own, but std::random_device
// (a system call or a CPU instruction check each time it is made) only once
// per thread, not once per connection: a load generator makes thousands.
uint32_t next_seed() {
  thread_local std::minstd_rand seeds(std::random_device{}());
  return static_cast<uint32_t>(seeds());
}

}  // namespace

Connector::Connector(EventLoop* loop, std::vector<Endpoint> targets,
                     std::chrono::milliseconds timeout, RetryPolicy retry)
    : loop_(loop),
      targets_(std::move(targets)),
      timeout_(timeout),
      retry_(retry),
      rng_(next_seed()) {}

Connector::~Connector() {
  // stop() must have run in the loop; a channel still registered here would
  // leave epoll pointing at freed memory.
  if (channel_) channel_->remove();
}

void Connector::start() {
  loop_->assert_in_loop_thread();
  stop();
  if (targets_.empty()) {
    // What a name that resolved to nothing leaves; a retry could only fail
    // the same way.
    if (on_failed_) {
      on_failed_(Error(Errc::name_not_found, "connect with no target address"),
                 std::chrono::milliseconds(-1));
    }
    return;
  }
  active_ = true;
  target_index_ = 0;
  failed_rounds_ = 0;
  attempt();
}

void Connector::stop() {
  loop_->assert_in_loop_thread();
  active_ = false;
  if (retry_timer_ != 0) loop_->cancel(retry_timer_);
  retry_timer_ = 0;
  finish_attempt();
  fd_.reset();
}

std::chrono::milliseconds Connector::backoff_for(int attempt) {
  // initial * 2^attempt, capped, then scaled by a random factor in [0.5, 1.5).
  auto base = retry_.initial;
  for (int i = 0; i < attempt && base < retry_.max; ++i) base *= 2;
  if (base > retry_.max) base = retry_.max;
  std::uniform_real_distribution<double> jitter(0.5, 1.5);
  auto delay = std::chrono::milliseconds(
      static_cast<long long>(static_cast<double>(base.count()) * jitter(rng_)));
  return std::min(delay, retry_.max);
}

void Connector::attempt() {
  const Endpoint& target = targets_[target_index_];
  auto fd = sys::tcp_socket(target.family(), /*nonblocking=*/true, target);
  if (!fd) {
    fail(fd.error());
    return;
  }
  fd_ = std::move(*fd);
  int rc = sys::connect(fd_.get(), target);
  if (rc != 0 && rc != -EINPROGRESS) {
    fail(Error::from_errno(-rc, "connect " + target.to_string()));
    return;
  }
  // Even an immediate success (possible on loopback) is reported through the
  // writable event, so the caller always hears back from the loop.
  channel_ = std::make_unique<Channel>(loop_, fd_.get());
  channel_->set_handler<&Connector::handle_event>(this);
  channel_->enable_writing();
  if (timeout_.count() > 0) {
    std::weak_ptr<Connector> weak = weak_from_this();
    timeout_timer_ = loop_->run_after(timeout_, [weak, this] {
      if (weak.expired()) return;
      timeout_timer_ = 0;
      fail(Error::from_errno(ETIMEDOUT, "connect " + targets_[target_index_].to_string()));
    });
  }
}

void Connector::handle_event() {
  const Endpoint& target = targets_[target_index_];
  finish_attempt();
  int err = sys::socket_error(fd_.get());
  if (err != 0) {
    fail(Error::from_errno(err, "connect " + target.to_string()));
    return;
  }
  // A connect to a free local port can connect the socket to itself (the
  // kernel picks that very port as the source): treat it as refused.
  if (sys::local_endpoint(fd_.get()) == sys::peer_endpoint(fd_.get())) {
    fail(Error::from_errno(ECONNREFUSED, "connect " + target.to_string() + " (self-connect)"));
    return;
  }
  active_ = false;
  if (on_connected_) on_connected_(std::move(fd_), target);
}

// Unregisters the attempt's channel and timer. The channel is destroyed
// later, since this may run inside its own event handler.
void Connector::finish_attempt() {
  if (timeout_timer_ != 0) loop_->cancel(timeout_timer_);
  timeout_timer_ = 0;
  if (!channel_) return;
  channel_->remove();
  loop_->queue_in_loop([doomed = std::shared_ptr<Channel>(std::move(channel_))] {});
}

void Connector::fail(const Error& error) {
  finish_attempt();
  fd_.reset();
  if (!active_) return;
  if (++target_index_ < targets_.size()) {
    attempt();
    return;
  }
  target_index_ = 0;
  std::chrono::milliseconds retry_in{-1};
  if (retry_.enabled) {
    retry_in = backoff_for(failed_rounds_++);
    std::weak_ptr<Connector> weak = weak_from_this();
    retry_timer_ = loop_->run_after(retry_in, [weak] {
      auto self = weak.lock();
      if (!self || !self->active_) return;
      self->retry_timer_ = 0;
      self->attempt();
    });
  } else {
    active_ = false;
  }
  if (on_failed_) on_failed_(error, retry_in);
}

}  // namespace tcpkit
