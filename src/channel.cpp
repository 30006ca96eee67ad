#include "tcpkit/detail/channel.h"

#include "tcpkit/event_loop.h"

namespace tcpkit {

void Channel::tie(const std::shared_ptr<void>& owner) {
  tie_ = owner;
  tied_ = true;
}

void Channel::handle_event(unsigned mask) {
  if (!tied_) {
    handler_(owner_, mask);
    return;
  }
  // The handler may drop the last outside reference to the owner (a close
  // erases the connection from its server); keep it alive until we return.
  std::shared_ptr<void> guard = tie_.lock();
  if (guard) handler_(owner_, mask);
}

void Channel::update(unsigned interest) {
  // No backend call for no change (closing disables what EOF already did).
  if (interest == interest_ && (registered() || interest == 0)) return;
  interest_ = interest;
  loop_->update_channel(this);
}

void Channel::change_receives(bool on) {
  receives_ = on;
  if (registered_) loop_->update_channel(this);
}

void Channel::remove() {
  interest_ = 0;
  loop_->remove_channel(this);
}

}  // namespace tcpkit
