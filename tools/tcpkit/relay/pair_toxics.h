// PairToxics: the chaos API's toxics as one RelayPair sees them — which of
// them fire on this connection, and what they do to each direction.
//
// Owned by a RelayPair and used only in its loop thread. update() takes the
// proxy's current list (a snapshot shared by all pairs, never modified) and
// decides per toxic whether it fires here, when it first sees the toxic and
// again when an update restarts it: its client CIDRs must hold the client,
// and a roll against its toxicity must succeed (0 never fires, 1 always). Every random choice a
// toxic makes (that roll, jitter, slice sizes) comes from its own generator, seeded from the
// toxic's "seed" or the relay's --seed, its name and the connection's sequence number, so a
// schedule of faults replays exactly when the same clients connect in the
// same order.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "relay/toxic.h"
#include "tcpkit/endpoint.h"

namespace tcpkit::cli {

class PairToxics {
 public:
  // A piece of data after frame toxics, and how much later than the rest
  // of its read it is to leave.
  struct Piece {
    std::string data;
    std::chrono::milliseconds extra{0};
  };
  // A toxic that acts on the whole connection after a time.
  struct Deadline {
    std::string name;
    ToxicType type;
    std::chrono::milliseconds after;
    bool reset;  // RST rather than FIN / close
  };

  PairToxics(Endpoint peer, uint64_t sequence, std::optional<uint64_t> seed);

  // Applies the proxy's new list; answers the deadlines of toxics that
  // started firing now (the pair arms a timer for each) and leaves in
  // `stopped` the names whose timers end: toxics removed since the last
  // call, and toxics updated since (an update restarts the toxic, as in
  // toxiproxy, so their deadlines are among those answered, counted from
  // now).
  std::vector<Deadline> update(const ToxicListPtr& list, std::vector<std::string>* stopped);

  bool any(Stream s) const;
  // Extra delay for the next read: latency toxics, jitter included.
  std::chrono::milliseconds latency(Stream s);
  uint64_t rate(Stream s) const;  // bytes per second; 0: no bandwidth toxic
  // The longest a frame toxic may delay a frame now: its delay toxics' sum.
  std::chrono::milliseconds frame_delay(Stream s) const;
  // The next piece's size and the pause after it (slicer); 0: none.
  size_t slice(Stream s);
  std::chrono::microseconds slice_delay(Stream s) const;
  // limit_data: the most bytes this direction may still carry, or
  // UINT64_MAX. A limit_data counts from when it was added, as in
  // toxiproxy, so the pair tells it what it carries; an update keeps the
  // count.
  uint64_t limit(Stream s) const;
  void carried(Stream s, uint64_t bytes);
  // Data arrived in this direction: a reset_peer toxic starts counting its
  // time at the first, as toxiproxy's does (answered as deadlines, which the
  // pair arms).
  std::vector<Deadline> data_arrived(Stream s);
  // Data in this direction is dropped: a timeout toxic (any value) fires.
  bool holding(Stream s) const;
  // A reset_peer counts down in this direction: what comes is held back
  // (the FIN too) for the RST; if the toxic goes first, it flows again.
  bool resetting(Stream s) const;
  std::chrono::milliseconds slow_close(Stream s) const;
  // unplug after_bytes: the smallest byte count (both ways), and whether it resets.
  std::optional<std::pair<uint64_t, bool>> unplug_bytes() const;
  // Frame toxics fire in this direction, or bytes of a frame still wait.
  bool has_frames(Stream s) const;
  // Runs the frame toxics over a read; whole frames come out, a partial one
  // waits in the direction's buffer for the rest. A frame over kMaxFrame
  // bytes (a length prefix over it, or a line without its '\n' by then)
  // passes untouched to its end, and framing goes on after it; so memory
  // stays bounded, and no toxic ever reads bytes inside a frame as frames.
  std::vector<Piece> frames(Stream s, std::string_view data);
  // At the end of the stream: the bytes of a frame that never finished,
  // which go out as they are (no toxic picks a frame that is not whole).
  std::string take_partial(Stream s);

  static constexpr size_t kMaxFrame = size_t{1024} * 1024;

 private:
  struct Active {
    Toxic toxic;
    std::mt19937_64 rng;
    bool fires = false;
    uint64_t frames_seen = 0;  // frame: frames that matched so far
    uint64_t carried = 0;      // limit_data: bytes since it was added
    bool triggered = false;    // reset_peer: data came, its timer runs
  };
  // What waits of a direction's frames.
  struct Framing {
    std::string partial;  // the bytes of a frame not whole yet
    size_t scanned = 0;   // of them, searched for a line end already
    size_t passing = 0;   // bytes of a frame over kMaxFrame still to pass untouched
  };
  static constexpr size_t kToLineEnd = SIZE_MAX;  // passing: up to the next '\n'

  template <typename Emit>
  void act_on_frame(const std::vector<Active*>& toxics, FrameCodec codec, std::string_view frame,
                    Emit& emit);
  template <typename F>
  void each(Stream s, ToxicType type, F&& f);
  template <typename F>
  void each(Stream s, ToxicType type, F&& f) const;

  const Endpoint peer_;
  const uint64_t sequence_;
  const std::optional<uint64_t> seed_;
  const uint64_t fallback_seed_;
  ToxicListPtr list_;
  std::map<std::string, Active> active_;  // by toxic name
  Framing framing_[2];                    // per stream
};

}  // namespace tcpkit::cli
