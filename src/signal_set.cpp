#include "tcpkit/signal_set.h"

#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>

#include "tcpkit/detail/channel.h"
#include "tcpkit/event_loop.h"

namespace tcpkit {
namespace {

sigset_t set_of(std::initializer_list<int> signals) {
  sigset_t set;
  sigemptyset(&set);
  for (int signo : signals) sigaddset(&set, signo);
  return set;
}

}  // namespace

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
  return std::unique_ptr<SignalSet>(new SignalSet(loop, std::move(fd), std::move(on_signal)));
}

SignalSet::SignalSet(EventLoop* loop, UniqueFd fd, Callback on_signal)
    : loop_(loop),
      fd_(std::move(fd)),
      channel_(std::make_unique<Channel>(loop, fd_.get())),
      on_signal_(std::move(on_signal)) {
  channel_->set_handler<&SignalSet::handle_read>(this);
  channel_->enable_reading();
}

SignalSet::~SignalSet() {
  loop_->assert_in_loop_thread();
  if (destroyed_ != nullptr) *destroyed_ = true;  // from inside handle_read()
  channel_->remove();
}

// Every signal that is pending is read at once, then handed over in order; a
// callback may destroy this set (a program's stop), and the flag on the stack
// then ends the loop below without touching a member.
void SignalSet::handle_read() {
  signalfd_siginfo infos[8];
  const ssize_t n = ::read(fd_.get(), infos, sizeof infos);
  if (n <= 0) return;  // EAGAIN: another reader took it; nothing else can fail here
  bool destroyed = false;
  destroyed_ = &destroyed;
  for (size_t i = 0; i < static_cast<size_t>(n) / sizeof infos[0]; ++i) {
    const Callback on_signal = on_signal_;  // the set, and its copy, may go inside
    on_signal(static_cast<int>(infos[i].ssi_signo));
    if (destroyed) return;
  }
  destroyed_ = nullptr;
}

}  // namespace tcpkit
