// fatal: the library's one way out of a state it cannot go on from.
//
// Internal (not installed). Two kinds of call end here, in every build (not
// only where assert() is on): a misuse that no error value can report (a
// loop used from a thread that does not own it, a second reader on one
// stream, a Buffer read past its bytes), and a system call of the loop's own
// that must not fail (epoll_wait, io_uring_enter). The message goes to stderr
// as one line, "tcpkit: " and the text, written at once so that two threads
// dying together do not interleave; then the process aborts, leaving a core
// at the call that misused the library.
#pragma once

namespace tcpkit::detail {

[[noreturn]] [[gnu::cold]] [[gnu::format(printf, 1, 2)]] void fatal(const char* format, ...);

}  // namespace tcpkit::detail
