#include "relay/pair_toxics.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "tcpkit/buffer.h"
#include "tcpkit/length_prefix_codec.h"
#include "tcpkit/line_codec.h"

namespace tcpkit::cli {
namespace {

// SplitMix64's finaliser: spreads a few similar inputs (names, sequence
// numbers) over unrelated seeds.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t name_hash(std::string_view name) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a: stable across runs, unlike std::hash
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ULL;
  return h;
}

bool admits(const Toxic& t, const Endpoint& peer) {
  if (t.clients.empty()) return true;
  return std::any_of(t.clients.begin(), t.clients.end(),
                     [&](const Cidr& c) { return c.contains(peer); });
}

// Whether `t` fires on the connection from `peer`: its CIDRs hold the client
// and a roll against its toxicity succeeds (0 never fires, 1 always, with no
// roll taken from `rng`).
bool fires_for(const Toxic& t, const Endpoint& peer, std::mt19937_64& rng) {
  if (!admits(t, peer) || !(t.toxicity > 0)) return false;
  return t.toxicity >= 1.0 || std::uniform_real_distribution<double>(0.0, 1.0)(rng) < t.toxicity;
}

// What of a firing toxic acts on the whole connection after a time, from
// when it starts. A reset_peer counts from the first data in its direction
// instead (data_arrived()).
void add_deadline(const Toxic& t, std::vector<PairToxics::Deadline>* out) {
  using std::chrono::milliseconds;
  if (t.type == ToxicType::timeout && t.timeout > 0)
    out->push_back({t.name, t.type, milliseconds(t.timeout), false});
  if (t.type == ToxicType::unplug && t.after_ms >= 0)
    out->push_back({t.name, t.type, milliseconds(t.after_ms), t.unplug_reset});
}

int index(Stream s) {
  return s == Stream::upstream ? 0 : 1;
}

// The first frame in `data`, found without copying it: whole (`size`
// bytes), not whole yet, or over kMaxFrame. A line frame is searched for its
// '\n' from `from` on: the bytes before were searched already.
struct FrameCut {
  enum Kind { whole, need_more, too_large } kind;
  // whole: the frame's bytes; too_large: all of them, or SIZE_MAX for a
  // line whose end has not come (PairToxics::kToLineEnd).
  size_t size = 0;
};

FrameCut cut_line(std::string_view data, size_t from) {
  constexpr size_t kMax = PairToxics::kMaxFrame;
  const size_t eol = data.find('\n', from);
  if (eol == std::string_view::npos) {
    // A trailing '\r' may be the first half of "\r\n", as LineCodec counts it.
    const size_t content = !data.empty() && data.back() == '\r' ? data.size() - 1 : data.size();
    if (content > kMax) return {FrameCut::too_large, SIZE_MAX};
    return {FrameCut::need_more};
  }
  const size_t content = eol > 0 && data[eol - 1] == '\r' ? eol - 1 : eol;
  return {content > kMax ? FrameCut::too_large : FrameCut::whole, eol + 1};
}

FrameCut cut_length(std::string_view data) {
  constexpr size_t kHeader = LengthPrefixCodec::kHeaderBytes;
  if (data.size() < kHeader) return {FrameCut::need_more};
  size_t length = 0;
  for (size_t i = 0; i < kHeader; ++i) length = length << 8 | static_cast<unsigned char>(data[i]);
  if (length > PairToxics::kMaxFrame) return {FrameCut::too_large, kHeader + length};
  if (data.size() < kHeader + length) return {FrameCut::need_more};
  return {FrameCut::whole, kHeader + length};
}

}  // namespace

PairToxics::PairToxics(Endpoint peer, uint64_t sequence, std::optional<uint64_t> seed)
    : peer_(std::move(peer)),
      sequence_(sequence),
      seed_(seed),
      fallback_seed_(std::random_device{}() * 0x100000001ULL ^ std::random_device{}()) {}

std::vector<PairToxics::Deadline> PairToxics::update(const ToxicListPtr& list,
                                                     std::vector<std::string>* stopped) {
  std::vector<Deadline> started;
  std::map<std::string, Active> next;
  for (const Toxic& t : list ? *list : ToxicList{}) {
    auto old = active_.find(t.name);
    if (old != active_.end() && old->second.toxic.type == t.type &&
        old->second.toxic.stream == t.stream) {
      // An update through the API restarts the toxic, as toxiproxy does:
      // its old timer ends, it rolls again against the new toxicity and
      // client CIDRs (from the generator where the first roll came from, so
      // a seeded run replays), and a new timer counts from now.
      Active kept = std::move(old->second);
      const bool restarted = kept.toxic.revision != t.revision;
      kept.toxic = t;
      if (restarted) {
        stopped->push_back(t.name);
        kept.triggered = false;
        kept.fires = fires_for(t, peer_, kept.rng);
        if (kept.fires) add_deadline(t, &started);
      }
      next.emplace(t.name, std::move(kept));
      continue;
    }
    uint64_t base = t.seed ? *t.seed : seed_ ? *seed_ : fallback_seed_;
    Active a{t, std::mt19937_64(mix(base ^ mix(name_hash(t.name)) ^ mix(sequence_ + 1)))};
    a.fires = fires_for(t, peer_, a.rng);
    if (a.fires) add_deadline(t, &started);
    next.emplace(t.name, std::move(a));
  }
  // Gone, or another toxic under the same name: its timer ends. (An
  // update, which restarts it, is in `stopped` already.)
  for (const auto& [name, a] : active_) {
    auto it = next.find(name);
    if (it == next.end() || it->second.toxic.type != a.toxic.type ||
        it->second.toxic.stream != a.toxic.stream)
      stopped->push_back(name);
  }
  active_ = std::move(next);
  list_ = list;
  return started;
}

template <typename F>
void PairToxics::each(Stream s, ToxicType type, F&& f) {
  for (auto& [name, a] : active_) {
    if (a.fires && a.toxic.stream == s && a.toxic.type == type) f(a);
  }
}
template <typename F>
void PairToxics::each(Stream s, ToxicType type, F&& f) const {
  for (const auto& [name, a] : active_) {
    if (a.fires && a.toxic.stream == s && a.toxic.type == type) f(a);
  }
}

bool PairToxics::any(Stream s) const {
  return std::any_of(active_.begin(), active_.end(), [s](const auto& kv) {
    return kv.second.fires && kv.second.toxic.stream == s;
  });
}

std::chrono::milliseconds PairToxics::latency(Stream s) {
  int64_t total = 0;
  each(s, ToxicType::latency, [&](Active& a) {
    int64_t ms = a.toxic.latency;
    // Toxiproxy's jitter is symmetric: latency ± jitter, never below zero.
    if (a.toxic.jitter > 0)
      ms += std::uniform_int_distribution<int64_t>(-a.toxic.jitter, a.toxic.jitter)(a.rng);
    total += std::max<int64_t>(0, ms);
  });
  return std::chrono::milliseconds(total);
}

uint64_t PairToxics::rate(Stream s) const {
  uint64_t rate = 0;
  each(s, ToxicType::bandwidth, [&](const Active& a) {
    uint64_t r = static_cast<uint64_t>(a.toxic.rate) * 1000;  // KB/s, toxiproxy's unit
    if (r > 0 && (rate == 0 || r < rate)) rate = r;
  });
  return rate;
}

std::chrono::milliseconds PairToxics::frame_delay(Stream s) const {
  int64_t ms = 0;
  each(s, ToxicType::frame, [&](const Active& a) {
    if (a.toxic.action == FrameAction::delay) ms += a.toxic.delay;
  });
  return std::chrono::milliseconds(ms);
}

size_t PairToxics::slice(Stream s) {
  size_t size = 0;
  each(s, ToxicType::slicer, [&](Active& a) {
    int64_t n = a.toxic.average_size;
    if (a.toxic.size_variation > 0)
      n += std::uniform_int_distribution<int64_t>(-a.toxic.size_variation,
                                                  a.toxic.size_variation)(a.rng);
    size_t piece = static_cast<size_t>(std::max<int64_t>(1, n));
    if (size == 0 || piece < size) size = piece;
  });
  return size;
}

std::chrono::microseconds PairToxics::slice_delay(Stream s) const {
  int64_t us = 0;
  each(s, ToxicType::slicer, [&](const Active& a) { us = std::max(us, a.toxic.delay); });
  return std::chrono::microseconds(us);
}

uint64_t PairToxics::limit(Stream s) const {
  uint64_t limit = UINT64_MAX;
  each(s, ToxicType::limit_data, [&](const Active& a) {
    const auto bytes = static_cast<uint64_t>(a.toxic.bytes);
    limit = std::min(limit, bytes - std::min(bytes, a.carried));
  });
  return limit;
}

void PairToxics::carried(Stream s, uint64_t bytes) {
  each(s, ToxicType::limit_data, [&](Active& a) { a.carried += bytes; });
}

std::vector<PairToxics::Deadline> PairToxics::data_arrived(Stream s) {
  std::vector<Deadline> started;
  each(s, ToxicType::reset_peer, [&](Active& a) {
    if (a.triggered) return;
    a.triggered = true;
    started.push_back(
        {a.toxic.name, a.toxic.type, std::chrono::milliseconds(a.toxic.timeout), true});
  });
  return started;
}

bool PairToxics::holding(Stream s) const {
  bool hold = false;
  each(s, ToxicType::timeout, [&](const Active&) { hold = true; });
  return hold;
}

bool PairToxics::resetting(Stream s) const {
  bool counting = false;
  each(s, ToxicType::reset_peer, [&](const Active& a) { counting = counting || a.triggered; });
  return counting;
}

std::chrono::milliseconds PairToxics::slow_close(Stream s) const {
  int64_t ms = 0;
  each(s, ToxicType::slow_close, [&](const Active& a) { ms = std::max(ms, a.toxic.delay); });
  return std::chrono::milliseconds(ms);
}

std::optional<std::pair<uint64_t, bool>> PairToxics::unplug_bytes() const {
  std::optional<std::pair<uint64_t, bool>> best;
  for (const auto& [name, a] : active_) {
    if (!a.fires || a.toxic.type != ToxicType::unplug || a.toxic.after_bytes < 0) continue;
    auto n = static_cast<uint64_t>(a.toxic.after_bytes);
    if (!best || n < best->first) best = std::make_pair(n, a.toxic.unplug_reset);
  }
  return best;
}

bool PairToxics::has_frames(Stream s) const {
  bool found = false;
  each(s, ToxicType::frame, [&](const Active&) { found = true; });
  // A frame cut in half when its toxic went away still has to be sent.
  return found || !framing_[index(s)].partial.empty();
}

std::string PairToxics::take_partial(Stream s) {
  return std::exchange(framing_[index(s)], Framing{}).partial;
}

std::vector<PairToxics::Piece> PairToxics::frames(Stream s, std::string_view data) {
  std::vector<Piece> out;
  // Bytes that leave together are one piece: a read of many small frames
  // that no toxic picks stays one chunk, and costs one copy.
  auto emit = [&out](std::string_view bytes, std::chrono::milliseconds extra) {
    if (bytes.empty()) return;
    if (!out.empty() && out.back().extra == extra) {
      out.back().data.append(bytes);
    } else {
      out.push_back({std::string(bytes), extra});
    }
  };
  Framing& f = framing_[index(s)];
  // The first frame toxic's codec cuts the stream; every frame toxic of
  // this direction then sees each whole frame, in list order.
  std::vector<Active*> toxics;
  for (const Toxic& t : list_ ? *list_ : ToxicList{}) {
    auto it = active_.find(t.name);
    if (it != active_.end() && it->second.fires && t.stream == s && t.type == ToxicType::frame)
      toxics.push_back(&it->second);
  }
  if (toxics.empty()) {
    emit(f.partial, {});
    emit(data, {});
    f = Framing{};
    return out;
  }
  const FrameCodec codec = toxics.front()->toxic.codec;
  f.partial.append(data);
  std::string_view rest(f.partial);
  while (!rest.empty()) {
    if (f.passing > 0) {
      // The rest of a frame over kMaxFrame, untouched: up to its length,
      // or for a line up to its '\n'.
      size_t n = std::min(f.passing, rest.size());
      if (f.passing == kToLineEnd) {
        const size_t eol = rest.find('\n');
        n = eol == std::string_view::npos ? rest.size() : eol + 1;
        if (eol != std::string_view::npos) f.passing = 0;
      } else {
        f.passing -= n;
      }
      emit(rest.substr(0, n), {});
      rest.remove_prefix(n);
      continue;
    }
    const FrameCut cut = codec == FrameCodec::line ? cut_line(rest, f.scanned) : cut_length(rest);
    if (cut.kind == FrameCut::need_more) {
      f.scanned = codec == FrameCodec::line ? rest.size() : 0;
      break;
    }
    f.scanned = 0;
    if (cut.kind == FrameCut::too_large) {
      f.passing = cut.size;
      continue;
    }
    const std::string_view frame = rest.substr(0, cut.size);
    rest.remove_prefix(cut.size);
    act_on_frame(toxics, codec, frame, emit);
  }
  f.partial.erase(0, f.partial.size() - rest.size());
  return out;
}

template <typename Emit>
void PairToxics::act_on_frame(const std::vector<Active*>& toxics, FrameCodec codec,
                              std::string_view frame, Emit& emit) {
  // Copies are made only once a toxic picks the frame.
  std::vector<Piece> copies;
  bool picked = false;
  for (Active* a : toxics) {
    const Toxic& t = a->toxic;
    if (picked && copies.empty()) break;  // dropped
    const std::string_view now = picked ? std::string_view(copies.front().data) : frame;
    if (!t.match.empty() && now.find(t.match) == std::string_view::npos) continue;
    ++a->frames_seen;
    if (t.nth != 0 && a->frames_seen != static_cast<uint64_t>(t.nth)) continue;
    if (!picked) copies.push_back({std::string(frame), {}});
    picked = true;
    switch (t.action) {
      case FrameAction::drop:
        copies.clear();
        break;
      case FrameAction::duplicate:
        copies.push_back(copies.front());
        break;
      case FrameAction::delay:
        copies.front().extra += std::chrono::milliseconds(t.delay);
        break;
      case FrameAction::corrupt: {
        // Flip one payload byte: after a length prefix, before a line end.
        std::string& bytes = copies.front().data;
        size_t first = codec == FrameCodec::length ? LengthPrefixCodec::kHeaderBytes : 0;
        size_t last = bytes.size();
        while (codec == FrameCodec::line && last > first &&
               (bytes[last - 1] == '\n' || bytes[last - 1] == '\r'))
          --last;
        if (last > first)
          bytes[std::uniform_int_distribution<size_t>(first, last - 1)(a->rng)] ^= 0x01;
        break;
      }
    }
  }
  if (!picked) {
    emit(frame, {});
    return;
  }
  for (const Piece& c : copies) emit(c.data, c.extra);
}

}  // namespace tcpkit::cli
