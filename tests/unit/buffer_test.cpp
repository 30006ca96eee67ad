#include "tcpkit/buffer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tcpkit/unique_fd.h"

using tcpkit::Buffer;
using tcpkit::UniqueFd;

namespace {

// A connected AF_UNIX stream pair; [0] is read by the Buffer, [1] written by the test.
struct SocketPair {
  UniqueFd reader;
  UniqueFd writer;
};

SocketPair make_socket_pair() {
  int fds[2] = {-1, -1};
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0) << std::strerror(errno);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    ASSERT_GT(n, 0) << std::strerror(errno);
    data.remove_prefix(static_cast<size_t>(n));
  }
}

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + i % 26);
  return s;
}

}  // namespace

TEST(Buffer, DefaultConstructedAllocatesNothing) {
  Buffer buf;
  EXPECT_EQ(buf.capacity(), 0u);
  EXPECT_EQ(buf.readable_bytes(), 0u);
  EXPECT_EQ(buf.writable_bytes(), 0u);
  EXPECT_EQ(buf.prependable_bytes(), 0u);
  ASSERT_NE(buf.peek(), nullptr);  // safe to hand to memcpy even when empty
  EXPECT_TRUE(buf.view().empty());
  EXPECT_EQ(buf.find_eol(), nullptr);
  EXPECT_EQ(buf.find_crlf(), nullptr);
  EXPECT_EQ(buf.retrieve_all_as_string(), "");
  buf.append("", 0);
  EXPECT_EQ(buf.capacity(), 0u) << "an empty append must not allocate";
}

TEST(Buffer, FirstAppendAllocatesWithCheapPrepend) {
  Buffer buf;
  buf.append("hello");
  EXPECT_EQ(buf.readable_bytes(), 5u);
  EXPECT_EQ(buf.prependable_bytes(), Buffer::kCheapPrepend);
  EXPECT_EQ(buf.capacity(), Buffer::kCheapPrepend + Buffer::kInitialSize);
  EXPECT_EQ(buf.writable_bytes(), Buffer::kInitialSize - 5);
  EXPECT_EQ(buf.view(), "hello");
}

// The kernel copies a read into begin_write(), and copies to a destination
// that starts on a cache line run measurably faster (bench/micro_bench.cpp,
// BM_BufferReadFd): an emptied buffer's data starts on one, however it
// grew, and a prepend still fits in front of it.
TEST(Buffer, AnEmptiedBufferWritesFromACacheLineBoundary) {
  Buffer buf;
  for (size_t n : {size_t{5}, size_t{3000}, size_t{100000}}) {
    buf.append(pattern(n));
    buf.retrieve_all();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buf.begin_write()) % 64, 0u) << "after " << n << " bytes";
    EXPECT_GE(buf.prependable_bytes(), sizeof(uint32_t));
  }
  buf.ensure_writable(1 << 20);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(buf.begin_write()) % 64, 0u) << "after growing empty";
}

TEST(Buffer, AppendRetrieve) {
  Buffer buf;
  const std::string s = pattern(200);
  buf.append(s);
  EXPECT_EQ(buf.readable_bytes(), 200u);

  const std::string head = buf.retrieve_as_string(50);
  EXPECT_EQ(head, s.substr(0, 50));
  EXPECT_EQ(buf.readable_bytes(), 150u);
  EXPECT_EQ(buf.prependable_bytes(), Buffer::kCheapPrepend + 50);
  EXPECT_EQ(buf.view(), s.substr(50));

  buf.retrieve(100);
  EXPECT_EQ(buf.view(), s.substr(150));
  EXPECT_EQ(buf.retrieve_all_as_string(), s.substr(150));
  EXPECT_EQ(buf.readable_bytes(), 0u);
  // Retrieving everything rewinds, so the whole capacity is writable again.
  EXPECT_EQ(buf.prependable_bytes(), Buffer::kCheapPrepend);
  EXPECT_EQ(buf.writable_bytes(), Buffer::kInitialSize);
}

TEST(Buffer, RetrieveExactlyAllRewinds) {
  Buffer buf;
  buf.append("abcdef");
  buf.retrieve(6);
  EXPECT_EQ(buf.readable_bytes(), 0u);
  EXPECT_EQ(buf.prependable_bytes(), Buffer::kCheapPrepend);
}

TEST(Buffer, GrowsWhenSpaceRunsOut) {
  Buffer buf;
  const std::string first = pattern(400);
  buf.append(first);
  const std::string second = pattern(1000);
  buf.append(second);
  EXPECT_EQ(buf.readable_bytes(), 1400u);
  EXPECT_GE(buf.capacity(), Buffer::kCheapPrepend + 1400);
  EXPECT_EQ(buf.prependable_bytes(), Buffer::kCheapPrepend);
  EXPECT_EQ(buf.view(), first + second);
}

TEST(Buffer, GrowthIsGeometric) {
  Buffer buf;
  size_t reallocations = 0;
  size_t last_capacity = buf.capacity();
  for (int i = 0; i < 100000; ++i) {
    buf.append("0123456789");
    if (buf.capacity() != last_capacity) {
      ++reallocations;
      last_capacity = buf.capacity();
    }
  }
  EXPECT_EQ(buf.readable_bytes(), 1000000u);
  EXPECT_LT(reallocations, 20u) << "appends must not grow the storage linearly";
}

TEST(Buffer, MovesDataToFrontInsteadOfGrowing) {
  Buffer buf;
  buf.append(pattern(800));
  const size_t capacity = buf.capacity();
  buf.retrieve(700);  // 100 readable, 708 prependable, 224 writable
  ASSERT_EQ(buf.writable_bytes(), Buffer::kInitialSize - 800);
  const std::string tail(buf.view());
  const std::string more = pattern(500);
  buf.append(more);  // 500 > 224 writable, but 224 + 708 - 8 >= 500
  EXPECT_EQ(buf.capacity(), capacity) << "must reuse the consumed front";
  EXPECT_EQ(buf.prependable_bytes(), Buffer::kCheapPrepend);
  EXPECT_EQ(buf.readable_bytes(), 600u);
  EXPECT_EQ(buf.view(), tail + more);
}

TEST(Buffer, GrowsWhenFrontPlusTailIsNotEnough) {
  Buffer buf;
  buf.append(pattern(800));
  buf.retrieve(100);
  const std::string kept(buf.view());
  const size_t capacity = buf.capacity();
  buf.append(pattern(400));  // 224 + 108 - 8 < 400
  EXPECT_GT(buf.capacity(), capacity);
  EXPECT_EQ(buf.view(), kept + pattern(400));
}

TEST(Buffer, CheapPrepend) {
  Buffer buf;
  buf.append("payload");
  const uint32_t len = 7;
  const uint32_t be = htonl(len);
  buf.prepend(&be, sizeof be);
  EXPECT_EQ(buf.prependable_bytes(), Buffer::kCheapPrepend - 4);
  EXPECT_EQ(buf.readable_bytes(), 11u);
  EXPECT_EQ(buf.peek_u32_be(), 7u);
  buf.retrieve(4);
  EXPECT_EQ(buf.view(), "payload");
}

TEST(Buffer, PrependLargerThanCheapAreaMovesData) {
  Buffer buf;
  buf.append("world");
  buf.prepend("big hello, ", 11);
  EXPECT_EQ(buf.view(), "big hello, world");
  buf.prepend("<", 1);
  EXPECT_EQ(buf.view(), "<big hello, world");
}

TEST(Buffer, PrependOnEmptyBufferAllocates) {
  Buffer buf;
  buf.prepend("abc", 3);
  EXPECT_EQ(buf.view(), "abc");
  buf.append("def");
  EXPECT_EQ(buf.view(), "abcdef");
}

TEST(Buffer, DirectWriteWithEnsureWritable) {
  Buffer buf;
  buf.ensure_writable(100);
  ASSERT_GE(buf.writable_bytes(), 100u);
  ASSERT_NE(buf.begin_write(), nullptr);
  std::memcpy(buf.begin_write(), "direct", 6);
  buf.has_written(6);
  EXPECT_EQ(buf.view(), "direct");
  const size_t capacity = buf.capacity();
  buf.ensure_writable(10);  // already enough: no change
  EXPECT_EQ(buf.capacity(), capacity);
}

TEST(Buffer, FindCrlfAndEol) {
  Buffer buf;
  buf.append("ab\rc\r\nde\nf");
  ASSERT_NE(buf.find_crlf(), nullptr);
  EXPECT_EQ(buf.find_crlf() - buf.peek(), 4);
  ASSERT_NE(buf.find_eol(), nullptr);
  EXPECT_EQ(buf.find_eol() - buf.peek(), 5);
  buf.retrieve(6);
  EXPECT_EQ(buf.find_crlf(), nullptr);
  ASSERT_NE(buf.find_eol(), nullptr);
  EXPECT_EQ(buf.find_eol() - buf.peek(), 2);
  buf.retrieve(3);
  EXPECT_EQ(buf.find_eol(), nullptr);
}

TEST(Buffer, U32BigEndian) {
  Buffer buf;
  buf.append_u32_be(0x01020304u);
  ASSERT_EQ(buf.readable_bytes(), 4u);
  EXPECT_EQ(buf.view(), std::string_view("\x01\x02\x03\x04", 4));
  EXPECT_EQ(buf.peek_u32_be(), 0x01020304u);
  buf.append_u32_be(0xFFFFFFFFu);
  buf.retrieve(4);
  EXPECT_EQ(buf.peek_u32_be(), 0xFFFFFFFFu);
}

TEST(Buffer, ReleaseIfEmptyFreesStorage) {
  Buffer buf;
  buf.append(pattern(5000));
  EXPECT_GT(buf.capacity(), 0u);
  buf.release_if_empty();
  EXPECT_GT(buf.capacity(), 0u) << "must keep storage that holds readable bytes";
  EXPECT_EQ(buf.readable_bytes(), 5000u);
  buf.retrieve_all();
  buf.release_if_empty();
  EXPECT_EQ(buf.capacity(), 0u);
  EXPECT_EQ(buf.prependable_bytes(), 0u);
  EXPECT_EQ(buf.writable_bytes(), 0u);
  // And it is usable again afterwards.
  buf.append("again");
  EXPECT_EQ(buf.view(), "again");
}

TEST(Buffer, ShrinkToFitReadable) {
  Buffer buf;
  buf.append(pattern(100000));
  buf.retrieve(99990);
  buf.shrink_to_fit_readable();
  EXPECT_EQ(buf.capacity(), Buffer::kCheapPrepend + 10);
  EXPECT_EQ(buf.view(), pattern(100000).substr(99990));
  buf.retrieve_all();
  buf.shrink_to_fit_readable();
  EXPECT_EQ(buf.capacity(), 0u);
}

TEST(Buffer, MoveLeavesSourceEmpty) {
  Buffer a;
  a.append("moved");
  Buffer b(std::move(a));
  EXPECT_EQ(b.view(), "moved");
  EXPECT_EQ(a.capacity(), 0u);  // NOLINT(bugprone-use-after-move): the contract under test
  EXPECT_EQ(a.readable_bytes(), 0u);
  Buffer c;
  c.append("old");
  c = std::move(b);
  EXPECT_EQ(c.view(), "moved");
  EXPECT_EQ(b.capacity(), 0u);  // NOLINT(bugprone-use-after-move)
}

// Storage from kMapFrom bytes up is a mapping of its own: it grows in place
// or moves without losing a byte, whether the data sits at the front or was
// partly consumed, and shrinks, moves and frees like heap storage.
TEST(Buffer, LargeStorageKeepsEveryByteAcrossGrowthShrinkAndMove) {
  const std::string data = pattern(3 * Buffer::kMapFrom + 12345);
  Buffer buf;
  size_t appended = 0;
  size_t consumed = 0;
  for (size_t step = 4096 + 77; appended < data.size(); step = step * 3 / 2) {
    const size_t n = std::min(step, data.size() - appended);
    buf.append(data.data() + appended, n);
    appended += n;
    if (appended > Buffer::kMapFrom && consumed == 0) {
      buf.retrieve(1000);  // the next growth copies from a consumed front
      consumed = 1000;
    }
  }
  ASSERT_GE(buf.capacity(), Buffer::kMapFrom);
  EXPECT_EQ(buf.capacity() % static_cast<size_t>(::sysconf(_SC_PAGESIZE)), 0u)
      << "a mapping's capacity is whole pages";
  EXPECT_EQ(buf.view(), std::string_view(data).substr(consumed));

  buf.prepend("head", 4);
  EXPECT_EQ(buf.retrieve_as_string(4), "head");
  // Shrinks: first to a smaller mapping, then to heap storage.
  buf.retrieve(data.size() - consumed - Buffer::kMapFrom - 10);
  buf.shrink_to_fit_readable();
  EXPECT_EQ(buf.view(), std::string_view(data).substr(data.size() - Buffer::kMapFrom - 10));
  buf.retrieve(Buffer::kMapFrom);
  buf.shrink_to_fit_readable();
  EXPECT_EQ(buf.capacity(), Buffer::kCheapPrepend + 10);
  EXPECT_EQ(buf.view(), std::string_view(data).substr(data.size() - 10));

  Buffer big;
  big.append(data);
  Buffer moved(std::move(big));
  EXPECT_EQ(moved.view(), data);
  Buffer target;
  target.append(data);  // a mapping that the assignment frees
  target = std::move(moved);
  EXPECT_EQ(target.view(), data);
  target.retrieve_all();
  target.release_if_empty();
  EXPECT_EQ(target.capacity(), 0u);
}

// Large buffers that grow on two threads at once, with nothing ordering
// the threads (two loops whose only link is a socket the kernel fills, as
// io_uring does), each keep their own bytes. A growth that moves a mapping
// frees its old address range, and the other thread's next mapping may land
// there: the race detector must learn of both, or it reads the other
// thread's old writes as a race on the new storage.
TEST(Buffer, LargeBuffersGrowingOnTwoThreadsAtOnceKeepTheirOwnBytes) {
  constexpr int kRounds = 24;
  constexpr size_t kChunk = size_t{64} * 1024;
  constexpr size_t kLargest = size_t{8} * 1024 * 1024;
  auto grow_and_check = [](char fill, size_t* mismatches) {
    const std::string chunk(kChunk, fill);
    for (int round = 0; round < kRounds; ++round) {
      Buffer buf;
      while (buf.readable_bytes() < kLargest) buf.append(chunk);
      const std::string_view v = buf.view();
      *mismatches += static_cast<size_t>(
          std::count_if(v.begin(), v.end(), [fill](char c) { return c != fill; }));
    }
  };
  size_t mismatches_a = 0;
  size_t mismatches_b = 0;
  std::thread a(grow_and_check, 'a', &mismatches_a);
  std::thread b(grow_and_check, 'b', &mismatches_b);
  a.join();
  b.join();
  EXPECT_EQ(mismatches_a, 0u);
  EXPECT_EQ(mismatches_b, 0u);
}

namespace {

size_t resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long size = 0;
  unsigned long resident = 0;
  const int got = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return got == 2 ? resident * static_cast<size_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

}  // namespace

// Buffers that grow side by side, each at its own pace (the outputs of
// peers that stopped reading), hold about what they hold: growth leaves no
// freed storage behind to stay resident, whatever the allocator did before
// (here: a large block freed first, after which the heap keeps what is
// freed). Releasing them gives back all but what the process keeps for reuse.
TEST(Buffer, ResidentMemoryFollowsWhatGrowingBuffersHold) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "under a sanitizer, its allocator decides what stays resident";
#endif
  {
    Buffer earlier;
    earlier.append(pattern(size_t{8} * 1024 * 1024));
  }
  constexpr size_t kBuffers = 8;
  constexpr size_t kEach = size_t{4} * 1024 * 1024;
  const size_t before = resident_bytes();
  ASSERT_GT(before, 0u) << "no /proc/self/statm";
  {
    std::vector<Buffer> buffers(kBuffers);
    std::vector<std::string> chunks;
    for (size_t i = 0; i < kBuffers; ++i) chunks.push_back(pattern(16 * 1024 * (i + 1) + 1000 * i));
    for (bool growing = true; growing;) {
      growing = false;
      for (size_t i = 0; i < kBuffers; ++i) {
        if (buffers[i].readable_bytes() >= kEach) continue;
        buffers[i].append(chunks[i]);
        growing = true;
      }
    }
    size_t live = 0;
    for (const Buffer& b : buffers) live += b.readable_bytes();
    const size_t grown = resident_bytes() - before;
    EXPECT_LT(grown, live + live / 8) << "resident " << grown << " bytes for " << live << " held";
  }
  const size_t after = resident_bytes();
  EXPECT_LT(after, before + Buffer::kMaxKeptBytes + size_t{2} * 1024 * 1024)
      << "released buffers stayed resident";
}

// The next bytes go at the page offset asked for, past the prepend area,
// with the room asked for, whatever the storage was: none, a heap block
// (aligned only to a line), a mapping; and the bytes written there read back.
TEST(Buffer, ResetToPageOffsetPlacesTheNextBytes) {
  const auto page_offset = [](const char* p) {
    return reinterpret_cast<uintptr_t>(p) % Buffer::kCopyPage;
  };
  for (size_t want : {size_t{0}, size_t{64}, size_t{2048}, Buffer::kCopyPage - 1}) {
    for (size_t room : {size_t{16}, size_t{4096}, Buffer::kMapFrom}) {
      for (bool allocated : {false, true}) {
        Buffer buf;
        if (allocated) {
          buf.append(std::string(3000, 'x'));
          buf.retrieve_all();
        }
        buf.reset_to_page_offset(want, room);
        SCOPED_TRACE("offset " + std::to_string(want) + ", room " + std::to_string(room));
        EXPECT_EQ(buf.readable_bytes(), 0U);
        EXPECT_GE(buf.writable_bytes(), room);
        EXPECT_GE(buf.prependable_bytes(), Buffer::kCheapPrepend);
        EXPECT_EQ(page_offset(buf.begin_write()), want);
        buf.append("abc");
        EXPECT_EQ(buf.view(), "abc");
        EXPECT_EQ(page_offset(buf.peek()), want);
      }
    }
  }
}

TEST(Buffer, ReadFdIntoEmptyBufferAllocatesOnlyWhatArrived) {
  auto pair = make_socket_pair();
  write_all(pair.writer.get(), "hello");
  Buffer buf;
  EXPECT_EQ(buf.read_fd(pair.reader.get()), 5);
  EXPECT_EQ(buf.view(), "hello");
  EXPECT_EQ(buf.capacity(), Buffer::kCheapPrepend + Buffer::kInitialSize);
}

TEST(Buffer, ReadFdMoreThanExtraBufferInOneCall) {
  auto pair = make_socket_pair();
  // Large enough socket buffers that 200 KiB sit in the kernel at once.
  const int size = 1 << 20;
  ASSERT_EQ(::setsockopt(pair.writer.get(), SOL_SOCKET, SO_SNDBUF, &size, sizeof size), 0);
  ASSERT_EQ(::setsockopt(pair.reader.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size), 0);
  const std::string data = pattern(200 * 1024);
  write_all(pair.writer.get(), data);
  pair.writer.reset();

  Buffer buf;
  buf.ensure_writable(100 * 1024);  // writable region 100 KiB + 64 KiB extra
  const ssize_t first = buf.read_fd(pair.reader.get());
  EXPECT_GT(first, 100 * 1024) << "the stack extra buffer must take the overflow";
  EXPECT_LE(first, 100 * 1024 + 64 * 1024);
  ASSERT_EQ(buf.readable_bytes(), static_cast<size_t>(first));
  for (;;) {
    const ssize_t n = buf.read_fd(pair.reader.get());
    ASSERT_GE(n, 0) << std::strerror(static_cast<int>(-n));
    if (n == 0) break;
  }
  EXPECT_EQ(buf.readable_bytes(), data.size());
  EXPECT_EQ(buf.view(), data);
}

TEST(Buffer, ReadFdFromPipeAccumulatesBeyond64KiB) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd read_end(fds[0]);
  UniqueFd write_end(fds[1]);
  Buffer buf;
  std::string expected;
  for (int round = 0; round < 5; ++round) {
    const std::string chunk = pattern(40000 + round);
    write_all(write_end.get(), chunk);  // pipes hold 64 KiB by default
    expected += chunk;
    size_t got = 0;
    while (got < chunk.size()) {
      const ssize_t n = buf.read_fd(read_end.get());
      ASSERT_GT(n, 0);
      got += static_cast<size_t>(n);
    }
  }
  EXPECT_EQ(buf.view(), expected);
  write_end.reset();
  EXPECT_EQ(buf.read_fd(read_end.get()), 0);
}

TEST(Buffer, ReadFdHonoursMaxBytes) {
  auto pair = make_socket_pair();
  write_all(pair.writer.get(), pattern(10000));
  Buffer buf;
  EXPECT_EQ(buf.read_fd(pair.reader.get(), 100), 100);  // all via the extra buffer
  EXPECT_EQ(buf.readable_bytes(), 100u);
  // Now the writable region is larger than the cap: the cap still holds.
  ASSERT_GT(buf.writable_bytes(), 300u);
  EXPECT_EQ(buf.read_fd(pair.reader.get(), 300), 300);
  EXPECT_EQ(buf.readable_bytes(), 400u);
  // Cap straddling the writable region and the extra buffer.
  const size_t writable = buf.writable_bytes();
  EXPECT_EQ(buf.read_fd(pair.reader.get(), writable + 50), static_cast<ssize_t>(writable + 50));
  EXPECT_EQ(buf.view(), pattern(10000).substr(0, 400 + writable + 50));
}

TEST(Buffer, ReadFdReportsEofAndErrors) {
  auto pair = make_socket_pair();
  Buffer buf;
  ASSERT_EQ(::fcntl(pair.reader.get(), F_SETFL, O_NONBLOCK), 0);
  EXPECT_EQ(buf.read_fd(pair.reader.get()), -EAGAIN);
  EXPECT_EQ(buf.readable_bytes(), 0u);
  EXPECT_EQ(buf.capacity(), 0u) << "a read that got nothing must not allocate";
  pair.writer.reset();
  EXPECT_EQ(buf.read_fd(pair.reader.get()), 0);
  EXPECT_EQ(buf.read_fd(-1), -EBADF);
}

// Regression: a size near SIZE_MAX wrapped in the sums that size the storage
// (kCheapPrepend + n, readable + n, page rounding), so ensure_writable()
// returned with a 55-byte block while writable_bytes() claimed 2^64 bytes,
// and the next append wrote past the block. A size no allocator can give is
// an allocation failure, as from new, and leaves the buffer as it was.
TEST(Buffer, SizesThatWrapAreAnAllocationFailure) {
  const size_t huge[] = {SIZE_MAX, SIZE_MAX - 8, SIZE_MAX - Buffer::kCheapPrepend,
                         SIZE_MAX - Buffer::kCheapPrepend - Buffer::kInitialSize, SIZE_MAX / 2 + 1};
  for (const size_t n : huge) {
    Buffer empty;
    EXPECT_THROW(empty.ensure_writable(n), std::bad_alloc) << n;
    EXPECT_EQ(empty.capacity(), 0u) << n;
    EXPECT_EQ(empty.writable_bytes(), 0u) << n;

    Buffer buf;
    buf.append("abcdef");
    buf.retrieve(2);  // consumed bytes at the front: the slide path is tried first
    const size_t capacity = buf.capacity();
    EXPECT_THROW(buf.ensure_writable(n), std::bad_alloc) << n;
    EXPECT_THROW(buf.append(buf.peek(), n), std::bad_alloc) << n;
    EXPECT_THROW(buf.prepend(buf.peek(), n), std::bad_alloc) << n;
    EXPECT_EQ(buf.view(), "cdef") << n;
    EXPECT_EQ(buf.capacity(), capacity) << n;
    EXPECT_LE(buf.writable_bytes(), capacity) << n;

    Buffer page;
    EXPECT_THROW(page.reset_to_page_offset(0, n), std::bad_alloc) << n;
    EXPECT_EQ(page.capacity(), 0u) << n;
  }
}

// Regression: these preconditions were assert()s, gone from release builds,
// where retrieve_as_string() past the readable bytes read past them (out of
// the heap block), has_written() past the writable bytes let the next append
// write past the storage, and peek_u32_be() read stale bytes. Misuse aborts
// in every build, naming the call and the sizes.
TEST(BufferDeathTest, ReadsPastTheReadableBytesAbortInEveryBuild) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Buffer buf;
        buf.append("abcde");
        (void)buf.retrieve_as_string(100);
      },
      "tcpkit: Buffer::retrieve_as_string: size 100 is past readable_bytes\\(\\) = 5");
  EXPECT_DEATH(
      {
        Buffer buf;
        buf.append("abcde");
        buf.retrieve(6);
      },
      "tcpkit: Buffer::retrieve: size 6 is past readable_bytes\\(\\) = 5");
  EXPECT_DEATH(
      {
        Buffer buf;
        buf.append("ab");
        (void)buf.peek_u32_be();
      },
      "tcpkit: Buffer::peek_u32_be: size 4 is past readable_bytes\\(\\) = 2");
  EXPECT_DEATH(
      {
        Buffer empty;
        (void)empty.peek_u32_be();
      },
      "tcpkit: Buffer::peek_u32_be: size 4 is past readable_bytes\\(\\) = 0");
}

TEST(BufferDeathTest, HasWrittenPastTheWritableBytesAbortsInEveryBuild) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Buffer buf;
        buf.ensure_writable(10);
        buf.has_written(buf.writable_bytes() + 1);
      },
      "tcpkit: Buffer::has_written: size [0-9]+ is past writable_bytes\\(\\) = [0-9]+");
  EXPECT_DEATH(
      {
        Buffer empty;
        empty.has_written(1);
      },
      "tcpkit: Buffer::has_written: size 1 is past writable_bytes\\(\\) = 0");
}

TEST(Buffer, PreconditionsAtTheirLimitsHold) {
  Buffer buf;
  buf.append("abcdef");
  EXPECT_EQ(buf.retrieve_as_string(6), "abcdef");
  buf.append_u32_be(7);
  EXPECT_EQ(buf.peek_u32_be(), 7u);
  buf.retrieve(4);
  buf.has_written(buf.writable_bytes());
  EXPECT_EQ(buf.writable_bytes(), 0u);
}
