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

// The pending signals are taken one at a time, each handed over before the
// next is read: a callback may destroy this set (a program's stop), and the
// flag on the stack then ends the loop below without touching a member,
// leaving the signals not yet read pending, for whoever watches them next.
void SignalSet::handle_read() {
  bool destroyed = false;
  destroyed_ = &destroyed;
  signalfd_siginfo info;
  // EAGAIN ends it: nothing is pending (another set may have taken it).
  while (::read(fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    const Callback on_signal = on_signal_;  // the set, and its copy, may go inside
    on_signal(static_cast<int>(info.ssi_signo));
    if (destroyed) return;
  }
  destroyed_ = nullptr;
}

}  // namespace tcpkit
