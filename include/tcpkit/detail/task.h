// Task: the work an EventLoop queues (queue_in_loop()). Internal.
//
// A move-only void() callable that keeps what its callable captures in
// itself, up to kInline bytes, and allocates only for more. std::function
// keeps only trivially copyable captures of up to two pointers in itself
// and allocates for anything else: every queued lambda that holds a
// connection (a shared_ptr) cost a malloc and a free, one per connection
// closed by a server (its destruction is queued) and one per write that
// completes or fails. Move-only captures are allowed, which std::function
// refuses.
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace tcpkit::detail {

class Task {
 public:
  /// Room for a connection's shared_ptr beside a std::string or an
  /// error_code, or for a whole std::function.
  static constexpr size_t kInline = 48;

  /// Whether a callable of type D is kept in the Task itself.
  template <typename D>
  static constexpr bool kKeptInline =
      sizeof(D) <= kInline &&
      alignof(D) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<D>;

  Task() noexcept = default;

  template <typename F, typename D = std::decay_t<F>,
            typename = std::enable_if_t<!std::is_same_v<D, Task> && std::is_invocable_v<D&>>>
  Task(F&& f) {  // NOLINT(google-explicit-constructor): a lambda converts, as to std::function
    if constexpr (kKeptInline<D>) {
      ::new (static_cast<void*>(storage_)) D(std::forward<F>(f));
    } else {
      ::new (static_cast<void*>(storage_)) D*(new D(std::forward<F>(f)));
    }
    ops_ = &kOps<D>;
  }

  Task(Task&& other) noexcept : ops_(other.ops_) {
    if (ops_ != nullptr) ops_->move(other.storage_, storage_);
    other.ops_ = nullptr;
  }

  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      reset();
      ops_ = other.ops_;
      if (ops_ != nullptr) ops_->move(other.storage_, storage_);
      other.ops_ = nullptr;
    }
    return *this;
  }

  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { reset(); }

  explicit operator bool() const noexcept { return ops_ != nullptr; }

  /// Runs the callable; the Task must hold one.
  void operator()() { ops_->call(storage_); }

  /// Destroys the callable (and what it captured) now.
  void reset() noexcept {
    if (ops_ != nullptr) {
      ops_->destroy(storage_);
      ops_ = nullptr;
    }
  }

 private:
  struct Ops {
    void (*call)(void* storage);
    // Moves the callable from one storage to another and ends it in the first.
    void (*move)(void* from, void* to) noexcept;
    void (*destroy)(void* storage) noexcept;
  };

  template <typename D>
  static D& held(void* storage) {
    if constexpr (kKeptInline<D>) {
      return *std::launder(static_cast<D*>(storage));
    } else {
      return **std::launder(static_cast<D**>(storage));
    }
  }

  template <typename D>
  static void move_held(void* from, void* to) noexcept {
    if constexpr (kKeptInline<D>) {
      ::new (to) D(std::move(held<D>(from)));
      held<D>(from).~D();  // moved from: what is left of it ends here
    } else {
      ::new (to) D*(*std::launder(static_cast<D**>(from)));
    }
  }

  template <typename D>
  static void destroy_held(void* storage) noexcept {
    if constexpr (kKeptInline<D>) {
      held<D>(storage).~D();
    } else {
      delete &held<D>(storage);
    }
  }

  template <typename D>
  static constexpr Ops kOps{[](void* storage) { held<D>(storage)(); }, &move_held<D>,
                            &destroy_held<D>};

  alignas(std::max_align_t) unsigned char storage_[kInline];
  const Ops* ops_ = nullptr;
};

}  // namespace tcpkit::detail
