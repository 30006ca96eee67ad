// ReplyPrinter: writes what a peer sent to stdout, as text or as a hex dump.
//
// Owned by one command and called from its one thread. Text is decoded from
// the connection's encoding to UTF-8 with a streaming Transcoder, so a
// character split across two reads prints whole; UTF-8 passes through byte
// for byte, like nc. The hex dump shows the bytes on the wire, undecoded.
// Output goes straight to file descriptor 1 so nothing waits in a stdio
// buffer while the program sits in poll(), and a reader that went away
// (`tcpkit connect ... | head -1`) is an EPIPE result rather than a signal.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "tcpkit/transcoder.h"

namespace tcpkit::cli {

// One `hexdump -C` style line per 16 bytes: "00000010  68 69 0a ... |hi.|".
// `offset` is the stream position of bytes[0]; offsets continue across calls.
std::string hex_dump(std::string_view bytes, uint64_t offset);

class ReplyPrinter {
 public:
  // `decoder` converts from the wire encoding to UTF-8; none means pass through.
  ReplyPrinter(std::optional<Transcoder> decoder, bool hex)
      : decoder_(std::move(decoder)), hex_(hex) {}

  // Prints the bytes of one read. False once stdout can no longer be written.
  bool print(std::string_view bytes);
  // End of the stream: prints a held partial character (escaped).
  bool finish();
  // Ends a text line if the output so far does not, so the next reply (or
  // the shell prompt) starts on its own line. The hex dump always ends lines.
  bool end_line();

  int stdout_error() const { return stdout_error_; }

 private:
  bool emit(std::string_view text);

  std::optional<Transcoder> decoder_;
  bool hex_;
  uint64_t offset_ = 0;
  bool at_line_start_ = true;
  int stdout_error_ = 0;
  std::string scratch_;
};

}  // namespace tcpkit::cli
