#include "tcpkit/detail/channel.h"

#include "tcpkit/event_loop.h"

namespace tcpkit {

void Channel::update(unsigned interest) {
  // No backend call for no change (closing disables what EOF already did).
  if (interest == interest_ && (registered() || interest == 0)) return;
  interest_ = interest;
  loop_->update_channel(this);
}

void Channel::change_receives(bool on) {
  receives_ = on;
  if (registered_) loop_->channel_receives_changed(this);
}

void Channel::remove() {
  interest_ = 0;
  loop_->remove_channel(this);
}

}  // namespace tcpkit
