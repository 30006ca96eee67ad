// ChatRoom: the names of other instances' members (--cluster), as the room
// remembers and shows them.
#include "serve/chat_room.h"

#include <gtest/gtest.h>

#include <chrono>
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

// Regression: names of other instances were forgotten only once 4096 were
// remembered, each with its instance id (megabytes each, from Redis).
TEST(ChatRoom, NamesOfOtherInstancesAreForgottenAsTheyExpire) {
  ChatRoom room;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) room.relayed_name("name" + std::to_string(i), kInstanceA, start);
  EXPECT_EQ(room.remote_names_remembered(), 100u);
  // One of them used again later stays; the rest expire.
  const auto later = start + ChatRoom::kRemoteNameTtl / 2;
  EXPECT_EQ(room.relayed_name("name7", kInstanceA, later), "name7");
  const auto expired = start + ChatRoom::kRemoteNameTtl;
  EXPECT_EQ(room.relayed_name("new", kInstanceB, expired), "new");
  EXPECT_EQ(room.remote_names_remembered(), 2u);
  EXPECT_EQ(room.relayed_name("NAME7", kInstanceB, expired), "NAME7@fedcba");
  EXPECT_EQ(room.relayed_name("name8", kInstanceB, expired), "name8");
  EXPECT_EQ(room.relayed_name("new", kInstanceB, later + ChatRoom::kRemoteNameTtl), "new");
  EXPECT_EQ(room.remote_names_remembered(), 2u);  // "name8" and "new"
}

TEST(ChatRoom, AFullTableStillShowsNewNamesWithoutHoldingThem) {
  ChatRoom room;
  const auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < ChatRoom::kMaxRemoteNames + 10; ++i)
    room.relayed_name("n" + std::to_string(i), kInstanceA, now);
  EXPECT_EQ(room.remote_names_remembered(), ChatRoom::kMaxRemoteNames);
  EXPECT_EQ(room.relayed_name("n0", kInstanceB, now), "n0@fedcba");
  EXPECT_EQ(room.relayed_name("late", kInstanceB, now + ChatRoom::kRemoteNameTtl), "late");
  EXPECT_EQ(room.remote_names_remembered(), 1u);
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
