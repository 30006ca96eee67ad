// Micro-benchmarks of the reactor's byte container and the protocol helpers:
// Buffer append/retrieve, both codecs' decode, and the Transcoder's GBK ->
// UTF-8 and UTF-8 validation throughput. Results go to docs/benchmarks.md.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "tcpkit/buffer.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/length_prefix_codec.h"
#include "tcpkit/line_codec.h"
#include "tcpkit/transcoder.h"

namespace {

using tcpkit::Buffer;
using tcpkit::DecodeResult;
using tcpkit::EventLoop;
using tcpkit::IoBackend;
using tcpkit::LengthPrefixCodec;
using tcpkit::LineCodec;
using tcpkit::Transcoder;

// Appending `size` bytes and retrieving them again, as an echo connection does.
void BM_BufferAppendRetrieve(benchmark::State& state) {
  const std::string chunk(static_cast<size_t>(state.range(0)), 'x');
  Buffer buf;
  for (auto _ : state) {
    buf.append(chunk);
    benchmark::DoNotOptimize(buf.peek());
    buf.retrieve(chunk.size());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_BufferAppendRetrieve)->Arg(16)->Arg(512)->Arg(4096)->Arg(64 * 1024);

// Small appends, then retrieving all but a 50-byte partial message, so the
// buffer stays small and the move-to-front path runs instead of growth.
void BM_BufferStreaming(benchmark::State& state) {
  const std::string chunk(100, 'y');
  Buffer buf;
  for (auto _ : state) {
    for (int i = 0; i < 10; ++i) buf.append(chunk);
    buf.retrieve(buf.readable_bytes() - 50);
    benchmark::DoNotOptimize(buf.peek());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 1000);
}
BENCHMARK(BM_BufferStreaming);

// A connection's output under backpressure: a backlog that grows by 64 KiB
// appends, drains and is released, again and again; with /8, eight such
// backlogs growing side by side. From Buffer::kMapFrom up the storage is a
// mapping, reused from those released before (Buffer::kMaxKeptBytes).
void BM_BufferBacklog(benchmark::State& state) {
  const std::string chunk(size_t{64} * 1024, 'z');
  const auto backlog = static_cast<size_t>(state.range(0));
  std::vector<Buffer> buffers(static_cast<size_t>(state.range(1)));
  for (auto _ : state) {
    for (size_t held = 0; held < backlog; held += chunk.size()) {
      for (Buffer& b : buffers) b.append(chunk);
    }
    for (Buffer& b : buffers) {
      benchmark::DoNotOptimize(b.peek());
      b.retrieve_all();
      b.release_if_empty();
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * backlog * buffers.size()));
}
BENCHMARK(BM_BufferBacklog)
    ->Args({256 * 1024, 1})
    ->Args({1024 * 1024, 1})
    ->Args({4096 * 1024, 1})
    ->Args({1024 * 1024, 8})
    ->Args({4096 * 1024, 8});

// A message written into a Unix socket pair and read back with read_fd(),
// as a connection reads. Second argument 1: the buffer has room for the
// whole read cap, so read_fd() makes one read(); 0: it has less, so a
// readv() with the 64 KiB stack buffer behind it (what a read into a small
// buffer costs). The difference is the kernel's iovec import.
void BM_BufferReadFd(benchmark::State& state) {
  const auto size = static_cast<size_t>(state.range(0));
  const bool room = state.range(1) != 0;
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) {
    state.SkipWithError("socketpair failed");
    return;
  }
  const std::string message(size, 'r');
  const size_t cap = 256 * 1024;
  Buffer buf;
  buf.ensure_writable(room ? cap : size);
  for (auto _ : state) {
    if (::write(fds[0], message.data(), size) != static_cast<ssize_t>(size)) {
      state.SkipWithError("write failed");
      break;
    }
    benchmark::DoNotOptimize(buf.read_fd(fds[1], cap));
    buf.retrieve_all();
  }
  ::close(fds[0]);
  ::close(fds[1]);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_BufferReadFd)
    ->Args({16, 1})
    ->Args({16, 0})
    ->Args({4096, 1})
    ->Args({4096, 0})
    ->Args({65536, 1});

namespace {

// A connected TCP pair on 127.0.0.1: {sender, receiver}, or {-1, -1}.
std::pair<int, int> loopback_pair() {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (listener >= 0) ::close(listener);
    return {-1, -1};
  }
  const int sender = ::socket(AF_INET, SOCK_STREAM, 0);
  if (sender < 0 || ::connect(sender, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    ::close(listener);
    if (sender >= 0) ::close(sender);
    return {-1, -1};
  }
  const int receiver = ::accept(listener, nullptr, nullptr);
  ::close(listener);
  if (receiver < 0) {
    ::close(sender);
    return {-1, -1};
  }
  const int one = 1;
  ::setsockopt(sender, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return {sender, receiver};
}

}  // namespace

// The sender's CPU per write of `range(0)` bytes into a loopback TCP
// connection that another thread drains: range(1) 0 send(), 1 an io_uring
// IORING_OP_SEND, 2 an io_uring IORING_OP_SEND_ZC (zero-copy: the kernel
// pins the pages instead of copying them, and a second completion says when
// it let go of them). Each send waits for its completions, as a connection
// whose buffer must stay put until then would. Whether zero-copy pays for
// large writes on this kernel, where every benchmark here runs: loopback
// delivers the bytes to a local socket, which must copy pinned pages anyway.
void BM_SendLoopback(benchmark::State& state) {
  const auto size = static_cast<size_t>(state.range(0));
  const int64_t how = state.range(1);
  const auto [sender, receiver] = loopback_pair();
  if (sender < 0) {
    state.SkipWithError("no loopback TCP connection");
    return;
  }
  io_uring ring{};
  const bool uring = how != 0;
  if (uring && io_uring_queue_init(8, &ring, 0) != 0) {
    state.SkipWithError("io_uring unavailable here");
    ::close(sender);
    ::close(receiver);
    return;
  }
  std::thread drain([fd = receiver] {
    std::vector<char> sink(size_t{256} * 1024);
    while (::read(fd, sink.data(), sink.size()) > 0) {
    }
  });
  const std::string message(size, 'z');
  for (auto _ : state) {
    if (!uring) {
      for (size_t sent = 0; sent < size;) {
        const ssize_t n = ::send(sender, message.data() + sent, size - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<size_t>(n);
      }
      continue;
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (how == 2) {
      io_uring_prep_send_zc(sqe, sender, message.data(), size, MSG_NOSIGNAL | MSG_WAITALL, 0);
    } else {
      io_uring_prep_send(sqe, sender, message.data(), size, MSG_NOSIGNAL | MSG_WAITALL);
    }
    // SEND_ZC: the result, flagged MORE, then the notification.
    bool more = true;
    io_uring_submit(&ring);
    while (more) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_wait_cqe(&ring, &cqe) != 0) break;
      if (cqe->res < 0 && (cqe->flags & IORING_CQE_F_NOTIF) == 0) {
        state.SkipWithError("send failed (SEND_ZC needs Linux 6.0)");
        more = false;
      } else {
        more = how == 2 && (cqe->flags & IORING_CQE_F_NOTIF) == 0;
      }
      io_uring_cqe_seen(&ring, cqe);
    }
  }
  if (uring) io_uring_queue_exit(&ring);
  ::shutdown(sender, SHUT_WR);
  drain.join();
  ::close(sender);
  ::close(receiver);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_SendLoopback)
    ->Args({4096, 0})
    ->Args({4096, 1})
    ->Args({4096, 2})
    ->Args({65536, 0})
    ->Args({65536, 1})
    ->Args({65536, 2});

// 64 KiB sent over loopback TCP from a page-aligned buffer and read back,
// by one thread, into a destination `range(0)` bytes past a page start.
// The kernel copies to user space with `rep movsb` on CPUs that have fast
// short string moves, and some of them copy many times slower when the
// destination lies a few bytes past the source's offset within a page. The
// socket's data starts where the sender's copy put it in the kernel's page:
// `range(1)` bytes past where the sender's previous bytes ended, for the
// sender sends that many (read apart) just before. With none, the data is
// page-aligned, offset 8 shows the cost and 0 and 64 its absence; after 53
// (what a 64 KiB message leaves beyond one full segment of loopback's
// 65483-byte MSS) offset 64 lies 11 bytes past the source and pays it, and
// the middle of a page pays it after neither. Why a connection's buffers are
// aligned and the loop's shared read buffer reads into a page's middle.
void BM_ReadLoopbackAtOffset(benchmark::State& state) {
  const auto offset = static_cast<size_t>(state.range(0));
  const auto lead = static_cast<size_t>(state.range(1));
  constexpr size_t kSize = 64 * 1024;
  constexpr size_t kPage = 4096;
  const auto [sender, receiver] = loopback_pair();
  if (sender < 0) {
    state.SkipWithError("no loopback TCP connection");
    return;
  }
  // Room for a whole message on both sides: the one thread that sends it
  // reads it only afterwards.
  const int room = 1 << 20;
  ::setsockopt(sender, SOL_SOCKET, SO_SNDBUF, &room, sizeof room);
  ::setsockopt(receiver, SOL_SOCKET, SO_RCVBUF, &room, sizeof room);
  std::vector<char> out(kSize + 2 * kPage, 'p');
  std::vector<char> in(kSize + 2 * kPage);
  const auto page_after = [](char* p) {
    return p + (kPage - reinterpret_cast<uintptr_t>(p) % kPage) % kPage;
  };
  const char* from = page_after(out.data());
  char* to = page_after(in.data()) + offset;
  std::vector<char> scratch(lead);
  // Exactly n bytes from the receiver into dst; false on an error or EOF.
  const auto read_exactly = [receiver = receiver](char* dst, size_t n) {
    for (size_t got = 0; got < n;) {
      const ssize_t r = ::read(receiver, dst + got, n - got);
      if (r <= 0) return false;
      got += static_cast<size_t>(r);
    }
    return true;
  };
  for (auto _ : state) {
    if (lead > 0 && ::send(sender, from, lead, MSG_NOSIGNAL) != static_cast<ssize_t>(lead)) {
      state.SkipWithError("send failed");
      break;
    }
    for (size_t sent = 0; sent < kSize;) {
      const ssize_t n = ::send(sender, from + sent, kSize - sent, MSG_NOSIGNAL);
      if (n <= 0) {
        state.SkipWithError("send failed");
        break;
      }
      sent += static_cast<size_t>(n);
    }
    if (!read_exactly(scratch.data(), lead) || !read_exactly(to, kSize)) {
      state.SkipWithError("read failed");
      break;
    }
  }
  ::close(sender);
  ::close(receiver);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kSize));
}
BENCHMARK(BM_ReadLoopbackAtOffset)
    ->Args({0, 0})
    ->Args({8, 0})
    ->Args({64, 0})
    ->Args({2048, 0})
    ->Args({0, 53})
    ->Args({64, 53})
    ->Args({2048, 53});

// The cheapest system call's entry and exit (getppid, made directly so that
// no library keeps its result): the floor under every read, send and wait,
// and a gauge of the host. On the virtual machines this ran on, a call took
// from 76 ns on a quiet day to 170-240 ns on a busy one, with no steal time
// to show for it, and about 0.95 us on a host that sends every system call
// through the hypervisor; everything else slowed down with it: compare this
// figure between runs before comparing their others. user_share: the part
// of it that the thread's user time counts (getrusage). On such a host
// about half of each call is counted as user time, so a process's user
// time is not all its own code (bench/run-all's Machine table shows both).
void BM_SystemCall(benchmark::State& state) {
  rusage before{};
  ::getrusage(RUSAGE_THREAD, &before);
  for (auto _ : state) benchmark::DoNotOptimize(::syscall(SYS_getppid));
  rusage after{};
  ::getrusage(RUSAGE_THREAD, &after);
  auto seconds = [](const timeval& a, const timeval& b) {
    return static_cast<double>(b.tv_sec - a.tv_sec) +
           static_cast<double>(b.tv_usec - a.tv_usec) / 1e6;
  };
  const double user = seconds(before.ru_utime, after.ru_utime);
  const double system = seconds(before.ru_stime, after.ru_stime);
  state.counters["user_share"] = user + system > 0 ? user / (user + system) : 0.0;
}
BENCHMARK(BM_SystemCall);

// One loop iteration that must not wait: a timer is due, so the loop polls
// with a zero timeout, runs the timer and returns. What a loop pays when it
// only collects what is there (a due timer, a write recheck, busy polling).
// Argument: 0 epoll, 1 io_uring.
void BM_LoopPollWithoutWaiting(benchmark::State& state) {
  EventLoop loop(state.range(0) == 0 ? IoBackend::kEpoll : IoBackend::kUring);
  if (state.range(0) == 1 && loop.backend() != IoBackend::kUring) {
    state.SkipWithError("io_uring unavailable here");
    return;
  }
  for (auto _ : state) {
    loop.run_after(std::chrono::nanoseconds(0), [&loop] { loop.quit(); });
    loop.run();
  }
}
BENCHMARK(BM_LoopPollWithoutWaiting)->Arg(0)->Arg(1);

// Decoding a batch of lines of `range(0)` bytes from one buffer.
void BM_LineCodecDecode(benchmark::State& state) {
  const auto length = static_cast<size_t>(state.range(0));
  const std::string line(length, 'l');
  constexpr int kLines = 64;
  std::string wire;
  for (int i = 0; i < kLines; ++i) wire += line + "\r\n";
  const LineCodec codec;
  Buffer in;
  std::string out;
  for (auto _ : state) {
    in.append(wire);
    while (codec.decode(in, &out) == DecodeResult::frame) benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(wire.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kLines);
}
BENCHMARK(BM_LineCodecDecode)->Arg(32)->Arg(1024);

void BM_LengthPrefixDecode(benchmark::State& state) {
  const std::string payload(static_cast<size_t>(state.range(0)), 'p');
  constexpr int kFrames = 64;
  Buffer encoded;
  for (int i = 0; i < kFrames; ++i) {
    if (!LengthPrefixCodec::encode(payload, encoded)) std::abort();
  }
  const std::string wire(encoded.view());
  const LengthPrefixCodec codec;
  Buffer in;
  std::string out;
  for (auto _ : state) {
    in.append(wire);
    while (codec.decode(in, &out) == DecodeResult::frame) benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(wire.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kFrames);
}
BENCHMARK(BM_LengthPrefixDecode)->Arg(32)->Arg(1024);

// About 16 KiB of mixed Chinese and ASCII chat text.
std::string chat_text_utf8() {
  std::string text;
  while (text.size() < 16 * 1024) text += "收到了你的消息 message received 123\n";
  return text;
}

void BM_TranscodeGbkToUtf8(benchmark::State& state) {
  auto gbk = Transcoder::convert("UTF-8", "GBK", chat_text_utf8());
  if (!gbk) {
    state.SkipWithError(gbk.error().message().c_str());
    return;
  }
  auto transcoder = Transcoder::open("GBK", "UTF-8");
  std::string out;
  for (auto _ : state) {
    out.clear();
    transcoder->feed(*gbk, &out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(gbk->size()));
}
BENCHMARK(BM_TranscodeGbkToUtf8);

void BM_ValidateUtf8Mixed(benchmark::State& state) {
  const std::string text = chat_text_utf8();
  auto transcoder = Transcoder::open("UTF-8", "UTF-8");
  std::string out;
  for (auto _ : state) {
    out.clear();
    transcoder->feed(text, &out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(text.size()));
}
BENCHMARK(BM_ValidateUtf8Mixed);

void BM_ValidateUtf8Ascii(benchmark::State& state) {
  const std::string text(16 * 1024, 'a');
  auto transcoder = Transcoder::open("UTF-8", "UTF-8");
  std::string out;
  for (auto _ : state) {
    out.clear();
    transcoder->feed(text, &out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(text.size()));
}
BENCHMARK(BM_ValidateUtf8Ascii);

}  // namespace

BENCHMARK_MAIN();
