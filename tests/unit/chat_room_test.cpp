// ChatRoom: the names of other instances' members (--cluster), as the room
// remembers and shows them.
#include "serve/chat_room.h"

#include <gtest/gtest.h>

#include <string>

#include "serve/chat_cluster.h"

using tcpkit::cli::ChatRoom;
using tcpkit::cli::is_instance_id;

namespace {

constexpr std::string_view kInstanceA = "1234-0123456789abcdef";
constexpr std::string_view kInstanceB = "99-fedcba9876543210";

}  // namespace

TEST(ChatRoom, ANameHeldElsewhereShowsTheSendersTag) {
  ChatRoom room;
  EXPECT_EQ(room.relayed_name("bob", kInstanceA), "bob");
  EXPECT_EQ(room.relayed_name("BOB", kInstanceB), "BOB@fedcba");
  EXPECT_EQ(room.relayed_name("bob", kInstanceA), "bob");
}

// Regression: the tag was the six bytes after the id's dash, whatever they
// were: an ESC sequence, a bell, half a UTF-8 character.
TEST(ChatRoom, TheTagCarriesNoControlBytesAndCutsNoCharacter) {
  ChatRoom room;
  EXPECT_EQ(room.relayed_name("bob", kInstanceA), "bob");
  EXPECT_EQ(room.relayed_name("bob", "1-\x1b[2J\x07zz"), "bob@?");
  EXPECT_EQ(room.relayed_name("bob", "1-ab\x1b[2J"), "bob@ab");
  EXPECT_EQ(room.relayed_name("bob", "1-abcd\xc3\xa9"), "bob@abcd");
  EXPECT_EQ(room.relayed_name("bob", "1-\xc3\xa9\xc3\xa9\xc3\xa9"), "bob@?");
}

// Regression: the instance id of a relayed line was never checked.
TEST(InstanceId, OnlyTheShapeAnInstancePublishes) {
  EXPECT_TRUE(is_instance_id(kInstanceA));
  EXPECT_TRUE(is_instance_id("4194304-00000000ffffffff"));
  EXPECT_FALSE(is_instance_id(""));
  EXPECT_FALSE(is_instance_id("other"));
  EXPECT_FALSE(is_instance_id("-0123456789abcdef"));
  EXPECT_FALSE(is_instance_id("12a-0123456789abcdef"));
  EXPECT_FALSE(is_instance_id("1234-0123456789ABCDEF"));
  EXPECT_FALSE(is_instance_id("1234-0123456789abcde"));
  EXPECT_FALSE(is_instance_id("1234-0123456789abcdef0"));
  EXPECT_FALSE(
      is_instance_id("1234-\x1b[2J\x07"
                     "456789abcdef"));
  EXPECT_FALSE(is_instance_id("12345678901-0123456789abcdef"));
  EXPECT_FALSE(is_instance_id(std::string(1 << 20, '1') + "-0123456789abcdef"));
}
