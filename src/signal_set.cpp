#include "tcpkit/signal_set.h"

#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <vector>

#include "tcpkit/detail/channel.h"
#include "tcpkit/event_loop.h"

namespace tcpkit {

// One set, as the others see it. Its loop's thread alone reads and writes
// `alive` and calls `on_signal`; the registry below holds it while the set
// lives.
struct SignalSet::Watcher {
  Watcher(EventLoop* l, const sigset_t& s, Callback cb)
      : loop(l), signals(s), on_signal(std::move(cb)) {}
  EventLoop* loop;
  sigset_t signals;
  Callback on_signal;
  bool alive = true;
};

namespace {

sigset_t set_of(std::initializer_list<int> signals) {
  sigset_t set;
  sigemptyset(&set);
  for (int signo : signals) sigaddset(&set, signo);
  return set;
}

}  // namespace

// Every live set's watcher. A set leaves it, under the lock, before its
// loop may go, so a loop reached through it still exists.
struct SignalSetRegistry {
  static std::mutex lock;
  static std::vector<std::shared_ptr<SignalSet::Watcher>>& watchers() {
    static auto* all = new std::vector<std::shared_ptr<SignalSet::Watcher>>;  // never destroyed
    return *all;
  }
};
std::mutex SignalSetRegistry::lock;

void SignalSet::block(std::initializer_list<int> signals) {
  const sigset_t set = set_of(signals);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void SignalSet::unblock(std::initializer_list<int> signals) {
  const sigset_t set = set_of(signals);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

Result<std::unique_ptr<SignalSet>> SignalSet::create(EventLoop* loop,
                                                     std::initializer_list<int> signals,
                                                     Callback on_signal) {
  loop->assert_in_loop_thread();
  const sigset_t set = set_of(signals);
  UniqueFd fd(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!fd) return Error::from_errno(errno, "signalfd");
  auto watcher = std::make_shared<Watcher>(loop, set, std::move(on_signal));
  {
    std::lock_guard lock(SignalSetRegistry::lock);
    SignalSetRegistry::watchers().push_back(watcher);
  }
  return std::unique_ptr<SignalSet>(new SignalSet(loop, std::move(fd), std::move(watcher)));
}

SignalSet::SignalSet(EventLoop* loop, UniqueFd fd, std::shared_ptr<Watcher> watcher)
    : loop_(loop),
      fd_(std::move(fd)),
      channel_(std::make_unique<Channel>(loop, fd_.get())),
      watcher_(std::move(watcher)) {
  channel_->set_handler<&SignalSet::handle_read>(this);
  channel_->enable_reading();
}

SignalSet::~SignalSet() {
  loop_->assert_in_loop_thread();
  if (destroyed_ != nullptr) *destroyed_ = true;  // from inside handle_read()
  watcher_->alive = false;                        // an arrival queued for it is not heard
  {
    std::lock_guard lock(SignalSetRegistry::lock);
    auto& all = SignalSetRegistry::watchers();
    all.erase(std::find(all.begin(), all.end(), watcher_));
  }
  channel_->remove();
}

// The pending signals are taken one at a time, each handed over before the
// next is read: a callback may destroy this set (a program's stop), and the
// flag on the stack then ends the loop below without touching a member,
// leaving the signals not yet read pending, for whoever watches them next.
// The other sets that watch a signal read here get it in their loops, queued
// before this set's callback runs (which may end the program).
void SignalSet::handle_read() {
  bool destroyed = false;
  destroyed_ = &destroyed;
  signalfd_siginfo info;
  // EAGAIN ends it: nothing is pending (another set may have taken it).
  while (::read(fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    const int signo = static_cast<int>(info.ssi_signo);
    {
      std::lock_guard lock(SignalSetRegistry::lock);
      for (const auto& other : SignalSetRegistry::watchers()) {
        if (other == watcher_ || sigismember(&other->signals, signo) != 1) continue;
        // `other` keeps the watcher, and the callback running, should its
        // set go inside.
        other->loop->queue_in_loop([other, signo] {
          if (other->alive) other->on_signal(signo);
        });
      }
    }
    const std::shared_ptr<Watcher> watcher = watcher_;  // the set may go inside
    watcher->on_signal(signo);
    if (destroyed) return;
  }
  destroyed_ = nullptr;
}

}  // namespace tcpkit
