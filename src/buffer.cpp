#include "tcpkit/buffer.h"

#include <arpa/inet.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cstring>
#include <mutex>
#include <new>
#include <utility>

#include "fatal.h"
#include "sys.h"

namespace tcpkit {
namespace {

// peek() points here while nothing is allocated, so callers may always pass
// it to memcpy/memchr (which must not be given a null pointer, even for 0 bytes).
constexpr char kEmpty[1] = {};

bool is_mapping(size_t capacity) {
  return capacity >= Buffer::kMapFrom;
}

// The most storage a Buffer asks for. Neither new nor mmap gives more than
// PTRDIFF_MAX bytes, and below it the sums that size storage cannot wrap:
// rounding up to a page, or doubling a capacity.
constexpr size_t kMaxStorage = PTRDIFF_MAX;

// a + b for a size of storage. A sum past kMaxStorage (or one that wraps
// around SIZE_MAX) is storage no allocator can give: std::bad_alloc, as new
// throws for it, before the buffer changes.
size_t storage_sum(size_t a, size_t b) {
  if (a > kMaxStorage || b > kMaxStorage - a) throw std::bad_alloc();
  return a + b;
}

// Misuse of a Buffer (DESIGN.md, decision 1): a call that would read past
// the readable bytes (stale or foreign memory) or count bytes written past
// the writable ones (so that the next append writes past the storage).
// Checked in every build, not only where assert() is on: one compare per
// call, and the message names the call and both sizes.
void require_size(const char* function, size_t size, const char* limit_name, size_t limit) {
  if (size > limit)
    detail::fatal("Buffer::%s: size %zu is past %s = %zu", function, size, limit_name, limit);
}

size_t page_size() {
  static const auto kPage = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return kPage;
}

// What storage for `wanted` bytes holds: a mapping uses its last page whole.
size_t usable_capacity(size_t wanted) {
  if (wanted > kMaxStorage) throw std::bad_alloc();
  if (!is_mapping(wanted)) return wanted;
  const size_t page = page_size();
  return (wanted + page - 1) / page * page;
}

// A fresh anonymous mapping of `size` bytes; null when the kernel refuses.
char* try_map_pages(size_t size) noexcept {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
}

char* map_pages(size_t size) {
  char* p = try_map_pages(size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

// The mapping resized, its pages kept (moved if it must move); null when
// the kernel refuses, the old mapping then still there.
//
// ThreadSanitizer learns of a mapping's life only through mmap and munmap;
// it does not see mremap. A mapping that mremap moved would leave its old
// range's history behind, and the next mapping another thread gets there
// would inherit it: that thread's first writes would read as a race with
// the writes of a buffer long gone. Under it, a resize is a fresh mapping,
// a copy and an munmap (slower, the same bytes).
char* remap_pages(char* p, size_t old_size, size_t new_size) noexcept {
#if TCPKIT_THREAD_SANITIZER
  char* fresh = try_map_pages(new_size);
  if (fresh == nullptr) return nullptr;
  std::memcpy(fresh, p, std::min(old_size, new_size));
  ::munmap(p, old_size);
  return fresh;
#else
  void* moved = ::mremap(p, old_size, new_size, MREMAP_MAYMOVE);
  return moved == MAP_FAILED ? nullptr : static_cast<char*>(moved);
#endif
}

// Mappings released by buffers, kept for the next large ones: a connection
// whose backlog forms and drains again and again reuses pages that are
// already there, where fresh ones would each cost a page fault, dearer than
// copying the page (bench/micro_bench.cpp, BM_BufferBacklog). The process
// keeps at most kMaxKept of them, Buffer::kMaxKeptBytes in all.
class KeptMappings {
 public:
  struct Mapping {
    char* pages = nullptr;
    size_t size = 0;
  };

  // Never destroyed: buffers in static objects may be freed after it would be.
  static KeptMappings& instance() {
    static auto* kept = new KeptMappings;
    return *kept;
  }

  // The smallest kept mapping of `size` bytes or more, else the largest
  // one; none when nothing is kept.
  Mapping take(size_t size) {
    std::lock_guard lock(mutex_);
    if (count_ == 0) return {};
    size_t fitting = count_;
    size_t largest = 0;
    for (size_t i = 0; i < count_; ++i) {
      if (kept_[i].size >= size && (fitting == count_ || kept_[i].size < kept_[fitting].size))
        fitting = i;
      if (kept_[i].size > kept_[largest].size) largest = i;
    }
    const size_t chosen = fitting < count_ ? fitting : largest;
    const Mapping m = kept_[chosen];
    kept_[chosen] = kept_[--count_];
    bytes_ -= m.size;
    return m;
  }

  // Keeps a released mapping if there is room; false when the caller must
  // unmap it.
  bool keep(char* pages, size_t size) {
    std::lock_guard lock(mutex_);
    if (count_ == kMaxKept || bytes_ + size > Buffer::kMaxKeptBytes) return false;
    kept_[count_++] = {pages, size};
    bytes_ += size;
    return true;
  }

 private:
  static constexpr size_t kMaxKept = 8;
  std::mutex mutex_;
  std::array<Mapping, kMaxKept> kept_{};
  size_t count_ = 0;
  size_t bytes_ = 0;
};

// Storage of at least `capacity` bytes (a usable_capacity()); a kept
// mapping may hold more, unless `exact`. Updates `capacity` to what the
// storage holds. Not zeroed: pages that nothing writes to stay unbacked.
// Throws std::bad_alloc, as new does.
char* allocate(size_t& capacity, bool exact) {
  if (!is_mapping(capacity))
    return static_cast<char*>(::operator new[](capacity, std::align_val_t{Buffer::kAlignment}));
  if (!exact) {
    auto m = KeptMappings::instance().take(capacity);
    if (m.size >= capacity) {
      capacity = m.size;
      return m.pages;
    }
    if (m.pages != nullptr) {
      // Smaller: grown, and the pages it had stay.
      if (char* grown = remap_pages(m.pages, m.size, capacity)) return grown;
      ::munmap(m.pages, m.size);
    }
  }
  return map_pages(capacity);
}

void deallocate(char* p, size_t capacity) noexcept {
  if (p == nullptr) return;
  if (!is_mapping(capacity)) {
    ::operator delete[](p, std::align_val_t{Buffer::kAlignment});
    return;
  }
  if (!KeptMappings::instance().keep(p, capacity)) ::munmap(p, capacity);
}

}  // namespace

Buffer::~Buffer() {
  deallocate(data_, capacity_);
}

Buffer::Buffer(Buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      capacity_(std::exchange(other.capacity_, 0)),
      reader_index_(std::exchange(other.reader_index_, 0)),
      writer_index_(std::exchange(other.writer_index_, 0)) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this == &other) return *this;
  deallocate(data_, capacity_);
  data_ = std::exchange(other.data_, nullptr);
  capacity_ = std::exchange(other.capacity_, 0);
  reader_index_ = std::exchange(other.reader_index_, 0);
  writer_index_ = std::exchange(other.writer_index_, 0);
  return *this;
}

const char* Buffer::peek() const {
  return data_ ? data_ + reader_index_ : kEmpty;
}

void Buffer::retrieve(size_t n) {
  require_size("retrieve", n, "readable_bytes()", readable_bytes());
  if (n < readable_bytes()) {
    reader_index_ += n;
    return;
  }
  retrieve_all();
}

void Buffer::retrieve_all() {
  // Back to the start, so the whole capacity is writable again without a move.
  const size_t front = data_ ? kCheapPrepend : 0;
  reader_index_ = front;
  writer_index_ = front;
}

std::string Buffer::retrieve_as_string(size_t n) {
  require_size("retrieve_as_string", n, "readable_bytes()", readable_bytes());
  std::string s(peek(), n);
  retrieve(n);
  return s;
}

std::string Buffer::retrieve_all_as_string() {
  return retrieve_as_string(readable_bytes());
}

void Buffer::append(const void* data, size_t n) {
  // An empty append must not allocate: idle connections stay at capacity 0.
  if (n == 0) return;
  ensure_writable(n);
  std::memcpy(begin_write(), data, n);
  writer_index_ += n;
}

void Buffer::prepend(const void* data, size_t n) {
  if (n == 0) return;
  if (n > prependable_bytes()) {
    // Rare (the cheap area covers headers); keep the cheap area in front of
    // the new bytes and some room behind the data.
    const size_t front = storage_sum(kCheapPrepend, n);
    reallocate(storage_sum(front + readable_bytes(), std::max(writable_bytes(), kInitialSize)),
               front);
  }
  reader_index_ -= n;
  std::memcpy(data_ + reader_index_, data, n);
}

void Buffer::has_written(size_t n) {
  require_size("has_written", n, "writable_bytes()", writable_bytes());
  writer_index_ += n;
}

void Buffer::ensure_writable(size_t n) {
  if (writable_bytes() >= n) return;
  make_space(n);
  assert(writable_bytes() >= n);
}

void Buffer::reset_to_page_offset(size_t page_offset, size_t n) {
  assert(readable_bytes() == 0 && page_offset < kCopyPage);
  const auto index = [&] {
    const auto at = reinterpret_cast<uintptr_t>(data_ + kCheapPrepend) % kCopyPage;
    return kCheapPrepend + (page_offset + kCopyPage - at) % kCopyPage;
  };
  if (data_ == nullptr || capacity_ < storage_sum(index(), n))
    reallocate(storage_sum(kCheapPrepend + kCopyPage, n), kCheapPrepend);
  reader_index_ = writer_index_ = index();
}

void Buffer::make_space(size_t n) {
  const size_t readable = readable_bytes();
  // Checked before anything moves, so that a size no storage can hold leaves
  // the buffer as it was.
  const size_t needed = storage_sum(kCheapPrepend + readable, n);
  if (!data_) {
    reallocate(std::max(needed, kCheapPrepend + kInitialSize), kCheapPrepend);
    return;
  }
  // Consumed bytes at the front plus the free tail are enough (the storage
  // holds the cheap-prepend area, the data and n more): slide the data back
  // to the cheap-prepend mark instead of growing (muduo's makeSpace).
  if (capacity_ >= needed) {
    std::memmove(data_ + kCheapPrepend, peek(), readable);
    reader_index_ = kCheapPrepend;
    writer_index_ = kCheapPrepend + readable;
    return;
  }
  // Doubling keeps a stream of small appends amortised O(1) per byte; a
  // capacity is at most kMaxStorage, so twice it does not wrap.
  reallocate(std::max(needed, capacity_ * 2), kCheapPrepend);
}

void Buffer::reallocate(size_t new_capacity, size_t front) {
  const size_t readable = readable_bytes();
  assert(front + readable <= new_capacity);
  const bool shrinking = new_capacity < capacity_;
  new_capacity = usable_capacity(new_capacity);
  // A mapping that changes size with its bytes already where they belong
  // keeps its pages: if it must move, the kernel moves them without a copy.
  if (is_mapping(capacity_) && is_mapping(new_capacity) && reader_index_ == front) {
    char* resized = remap_pages(data_, capacity_, new_capacity);
    if (resized == nullptr) throw std::bad_alloc();
    data_ = resized;
    capacity_ = new_capacity;
    return;
  }
  char* fresh = allocate(new_capacity, shrinking);
  if (readable > 0) std::memcpy(fresh + front, peek(), readable);
  deallocate(data_, capacity_);
  data_ = fresh;
  capacity_ = new_capacity;
  reader_index_ = front;
  writer_index_ = front + readable;
}

const char* Buffer::find_crlf() const {
  const std::string_view v = view();
  const size_t pos = v.find("\r\n");
  return pos == std::string_view::npos ? nullptr : v.data() + pos;
}

const char* Buffer::find_eol() const {
  return static_cast<const char*>(std::memchr(peek(), '\n', readable_bytes()));
}

uint32_t Buffer::peek_u32_be() const {
  require_size("peek_u32_be", sizeof(uint32_t), "readable_bytes()", readable_bytes());
  uint32_t be = 0;
  std::memcpy(&be, peek(), sizeof be);
  return ntohl(be);
}

void Buffer::append_u32_be(uint32_t value) {
  const uint32_t be = htonl(value);
  append(&be, sizeof be);
}

ssize_t Buffer::read_fd(int fd, size_t max_bytes) {
  // A zero-length readv() returns 0, which the caller would take for EOF.
  assert(max_bytes > 0);
  const size_t direct = std::min(writable_bytes(), max_bytes);
  // Room for all that this call may read (the loop's shared read buffer
  // keeps that much): one read() straight in, as a minimal loop does, with
  // no iovec array for the kernel to copy in.
  if (direct == max_bytes) {
    const ssize_t n = sys::read(fd, begin_write(), direct);
    if (n > 0) writer_index_ += static_cast<size_t>(n);
    return n;
  }
  // The extra buffer lives on the loop thread's stack: 64 KiB of it costs
  // nothing per connection, unlike giving every Buffer 64 KiB up front.
  char extra[kExtraReadBytes];
  const size_t spill = std::min(sizeof extra, max_bytes - direct);
  iovec vec[2];
  vec[0].iov_base = begin_write();
  vec[0].iov_len = direct;
  vec[1].iov_base = extra;
  vec[1].iov_len = spill;
  const ssize_t n = sys::readv(fd, vec, spill > 0 ? 2 : 1);
  if (n <= 0) return n;
  const auto got = static_cast<size_t>(n);
  if (got <= direct) {
    writer_index_ += got;
    return n;
  }
  writer_index_ += direct;
  append(extra, got - direct);
  return n;
}

void Buffer::release_if_empty() {
  if (readable_bytes() > 0) return;
  deallocate(std::exchange(data_, nullptr), capacity_);
  capacity_ = 0;
  reader_index_ = 0;
  writer_index_ = 0;
}

void Buffer::shrink_to_fit_readable() {
  if (readable_bytes() == 0) {
    release_if_empty();
    return;
  }
  reallocate(kCheapPrepend + readable_bytes(), kCheapPrepend);
}

}  // namespace tcpkit
