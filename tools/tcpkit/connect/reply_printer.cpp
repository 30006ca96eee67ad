#include "connect/reply_printer.h"

#include <unistd.h>

#include "tcpkit/unique_fd.h"

namespace tcpkit::cli {
namespace {

constexpr size_t kBytesPerLine = 16;
constexpr char kHexDigits[] = "0123456789abcdef";

void append_hex_byte(unsigned char byte, std::string* out) {
  out->push_back(kHexDigits[byte >> 4]);
  out->push_back(kHexDigits[byte & 0x0f]);
}

void append_offset(uint64_t offset, std::string* out) {
  for (int shift = 28; shift >= 0; shift -= 4) out->push_back(kHexDigits[(offset >> shift) & 0x0f]);
}

}  // namespace

std::string hex_dump(std::string_view bytes, uint64_t offset) {
  std::string out;
  for (size_t start = 0; start < bytes.size(); start += kBytesPerLine) {
    std::string_view row = bytes.substr(start, kBytesPerLine);
    append_offset(offset + start, &out);
    out += "  ";
    for (size_t i = 0; i < kBytesPerLine; ++i) {
      if (i < row.size()) {
        append_hex_byte(static_cast<unsigned char>(row[i]), &out);
        out += ' ';
      } else {
        out += "   ";
      }
      if (i == 7) out += ' ';
    }
    out += " |";
    for (char c : row) out += (c >= 0x20 && c < 0x7f) ? c : '.';
    out += "|\n";
  }
  return out;
}

bool ReplyPrinter::emit(std::string_view text) {
  if (stdout_error_ != 0) return false;
  if (text.empty()) return true;
  // A stdout that another program left non-blocking (a shared pipe, a
  // terminal in O_NONBLOCK) is full, not failed: write_all() waits for it.
  if (auto written = write_all(STDOUT_FILENO, text, "stdout"); !written) {
    stdout_error_ = written.error().code().value();
    return false;
  }
  at_line_start_ = text.back() == '\n';
  return true;
}

bool ReplyPrinter::print(std::string_view bytes) {
  if (hex_) {
    std::string dump = hex_dump(bytes, offset_);
    offset_ += bytes.size();
    return emit(dump);
  }
  if (!decoder_) return emit(bytes);
  scratch_.clear();
  decoder_->feed(bytes, &scratch_);
  return emit(scratch_);
}

bool ReplyPrinter::finish() {
  if (hex_ || !decoder_) return stdout_error_ == 0;
  scratch_.clear();
  decoder_->finish(&scratch_);
  return emit(scratch_);
}

bool ReplyPrinter::end_line() {
  if (hex_ || at_line_start_) return stdout_error_ == 0;
  return emit("\n");
}

}  // namespace tcpkit::cli
