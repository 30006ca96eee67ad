/// \file
/// SignalSet: signals delivered to a loop, as any other event (asio's
/// signal_set, libuv's uv_signal_t), through a signalfd(2).
///
/// A signal that a SignalSet watches must be blocked in every thread of the
/// process, or the kernel hands it to a thread that does not block it (and
/// its default action, termination for SIGINT and SIGTERM, runs there).
/// block() in main(), before any thread starts, does that: every thread
/// inherits the mask of the thread that starts it. No code runs in a signal
/// handler, so the callback may do anything a loop's callback may, and the
/// program needs no thread of its own to wait for signals.
///
/// As with asio's signal_set, each arrival goes to every set that watches
/// that signal, each in its own loop: the set whose signalfd reads it
/// first runs its callback at once, and queues the others' in their loops.
/// kill(2) and the terminal's ^C send theirs to the process, which is what
/// a set sees. A signal sent to one thread (pthread_kill(), tgkill(),
/// raise()) is seen only where that thread runs a set's loop (then every set
/// hears it); elsewhere it stays pending for that thread, unseen.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>

#include "tcpkit/result.h"
#include "tcpkit/unique_fd.h"

namespace tcpkit {

class Channel;
class EventLoop;

class SignalSet {
 public:
  using Callback = std::function<void(int signo)>;

  /// Blocks `signals` in the calling thread (and so in the threads it
  /// starts from then on).
  static void block(std::initializer_list<int> signals);
  /// Unblocks `signals` in the calling thread: one of them that arrives from
  /// then on gets its disposition (the default action, unless a handler is
  /// set), also when one is pending now.
  static void unblock(std::initializer_list<int> signals);

  /// Owner thread of `loop`. Watches `signals`: each one that arrives runs
  /// `on_signal(signo)` (the same callable each time, so its own state
  /// lasts) in the loop, once per arrival (a signal sent again
  /// before the loop has seen the first counts once, as the kernel keeps one
  /// pending instance of a standard signal). Block them first (block()).
  /// Fails when signalfd(2) does (EMFILE).
  static Result<std::unique_ptr<SignalSet>> create(EventLoop* loop,
                                                   std::initializer_list<int> signals,
                                                   Callback on_signal);
  /// Owner thread, before the loop goes: the other sets reach this one's
  /// loop until it is destroyed. Also from inside the callback, which leaves
  /// the signals that it has not read yet pending. A set destroyed before an
  /// arrival queued for it (another set read it) runs does not hear of it.
  ~SignalSet();
  SignalSet(const SignalSet&) = delete;
  SignalSet& operator=(const SignalSet&) = delete;

 private:
  struct Watcher;  ///< what the other sets need to hand this one a signal
  friend struct SignalSetRegistry;
  SignalSet(EventLoop* loop, UniqueFd fd, std::shared_ptr<Watcher> watcher);
  void handle_read();

  EventLoop* loop_;
  UniqueFd fd_;
  std::unique_ptr<Channel> channel_;
  std::shared_ptr<Watcher> watcher_;
  bool* destroyed_ = nullptr;  // set while handle_read() runs
};

}  // namespace tcpkit
