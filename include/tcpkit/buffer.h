/// \file
/// Buffer: the growable byte container behind every connection's input and
/// output, after muduo's Buffer.
///
/// Owned by value by its TcpConnection (or by whoever declared it); not
/// thread-safe, so only the owner's loop thread touches it. Move-only.
///
/// ```
///   +-------------------+------------------+------------------+
///   | prependable bytes |  readable bytes  |  writable bytes  |
///   |                   |     (CONTENT)    |                  |
///   +-------------------+------------------+------------------+
///   |                   |                  |                  |
///   0      <=      reader_index   <=   writer_index   <=   capacity
/// ```
///
/// Bytes are appended at writer_index and consumed from reader_index. The
/// first kCheapPrepend bytes are kept free so that a codec can put a length
/// header in front of a message it has already written, without a copy.
///
/// Idle memory: a default-constructed Buffer owns no storage (capacity 0). It
/// allocates on the first append or read, and release_if_empty() gives the
/// storage back, so a server with many quiet connections holds ~0 bytes of
/// buffer per connection between messages.
///
/// Large storage (kMapFrom bytes and up) is a mapping of its own rather than
/// a block of the heap: it grows without a copy (mremap), so growth leaves
/// no freed blocks behind. Heap blocks that doubling buffers free stay in the
/// process and fragment, so a server's resident memory with backlogged peers
/// would depend on the order in which their buffers grew. A released mapping
/// goes back to the system, except that the process keeps up to
/// kMaxKeptBytes of them for the next large buffers, whose pages are then
/// already there (a page fault costs more than copying the page).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tcpkit {

class Buffer {
 public:
  /// Room kept in front of the data for a cheap prepend: one cache line, so
  /// that with the storage aligned to one (kAlignment) the data after an
  /// emptied buffer starts on a line boundary, where the kernel's copy of a
  /// read runs fastest (bench/micro_bench.cpp, BM_BufferReadFd).
  static constexpr size_t kCheapPrepend = 64;
  /// The storage's alignment.
  static constexpr size_t kAlignment = 64;
  /// The first allocation holds at least this many bytes after the prepend area.
  static constexpr size_t kInitialSize = 1024;
  /// The stack buffer read_fd() reads into beyond the writable region.
  static constexpr size_t kExtraReadBytes = size_t{64} * 1024;
  /// Storage of this many bytes or more is its own anonymous mapping, its
  /// capacity rounded up to whole pages.
  static constexpr size_t kMapFrom = size_t{256} * 1024;
  /// Released mappings that the process keeps for reuse, in bytes at most.
  static constexpr size_t kMaxKeptBytes = size_t{16} * 1024 * 1024;

  /// Allocates nothing.
  Buffer() = default;
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer();

  size_t readable_bytes() const { return writer_index_ - reader_index_; }
  size_t writable_bytes() const { return capacity_ - writer_index_; }
  size_t prependable_bytes() const { return reader_index_; }
  size_t capacity() const { return capacity_; }

  /// The first readable byte; never null, even when nothing is allocated.
  const char* peek() const;
  std::string_view view() const { return {peek(), readable_bytes()}; }

  /// Consumes n readable bytes. Misuse aborts in every build, with a message
  /// naming the call and the sizes: retrieve(n) or retrieve_as_string(n) with
  /// n > readable_bytes(), has_written(n) with n > writable_bytes(), and
  /// peek_u32_be() with fewer than 4 readable bytes.
  void retrieve(size_t n);
  void retrieve_all();
  std::string retrieve_as_string(size_t n);
  std::string retrieve_all_as_string();

  void append(const void* data, size_t n);
  void append(std::string_view s) { append(s.data(), s.size()); }
  /// Puts n bytes in front of the readable bytes. Free when n <=
  /// prependable_bytes(); otherwise the data is moved to make room.
  void prepend(const void* data, size_t n);

  /// Direct writes: ensure_writable(n), write up to n bytes at begin_write(),
  /// then has_written(count). begin_write() is null while capacity() is 0.
  char* begin_write() { return data_ + writer_index_; }
  void has_written(size_t n);
  /// Makes writable_bytes() >= n, by moving the data to the front when that
  /// frees enough room and by growing the storage only when it does not.
  /// Like new, it throws std::bad_alloc when the storage cannot be had; so
  /// does any call here that would need storage of more than PTRDIFF_MAX
  /// bytes in all, and the buffer is then unchanged.
  void ensure_writable(size_t n);
  /// Empty buffers only: the next bytes go at the first address past the
  /// cheap prepend area whose offset within a kCopyPage-byte page is
  /// `page_offset`, with writable_bytes() >= n from there (the storage grows
  /// when it must). For a reader that picks where the kernel copies to: some
  /// CPUs copy many times slower when the destination lies a few bytes past
  /// the source's offset within a page (bench/micro_bench.cpp,
  /// BM_ReadLoopbackAtOffset).
  void reset_to_page_offset(size_t page_offset, size_t n);
  /// The page that reset_to_page_offset() counts in: a copy's source and
  /// destination alias when they agree in the low 12 address bits.
  static constexpr size_t kCopyPage = 4096;

  /// The first "\r\n" / '\n' among the readable bytes, or null.
  const char* find_crlf() const;
  const char* find_eol() const;

  /// Network byte order (big-endian) integers, for length prefixes.
  uint32_t peek_u32_be() const;  ///< needs readable_bytes() >= 4 (else aborts)
  void append_u32_be(uint32_t value);

  /// Reads from fd into the writable region plus a 64 KiB stack buffer, so one
  /// readv() takes whatever the kernel has (up to the writable space + 64 KiB)
  /// without an ioctl(FIONREAD) and without keeping a large buffer for every
  /// idle connection (muduo's technique). Reads at most max_bytes (> 0), which
  /// lets a loop cap the work one connection gets per wake-up; where the
  /// writable region holds max_bytes, one read() into it. Returns the
  /// byte count, 0 at end of stream, or -errno (e.g. -EAGAIN).
  ssize_t read_fd(int fd, size_t max_bytes = SIZE_MAX);

  /// Frees the storage when nothing is readable (capacity becomes 0).
  void release_if_empty();
  /// Reallocates to exactly kCheapPrepend + readable_bytes(), or frees the
  /// storage when nothing is readable: for a buffer that grew for one burst.
  void shrink_to_fit_readable();

 private:
  /// Moves the readable bytes into fresh storage of new_capacity bytes,
  /// starting at offset `front`.
  void reallocate(size_t new_capacity, size_t front);
  void make_space(size_t n);

  /// Owned; allocated and freed by buffer.cpp's allocate()/deallocate(),
  /// which tell a heap block from a mapping by the capacity.
  char* data_ = nullptr;
  size_t capacity_ = 0;
  size_t reader_index_ = 0;
  size_t writer_index_ = 0;
};

}  // namespace tcpkit
