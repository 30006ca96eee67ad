// Peer echo server for bench/run-all: Boost.Asio, written the way Asio's users
// write one. A session per connection keeps itself alive with shared_from_this,
// reads with async_read_some into a 16 KiB buffer and writes back what it read
// with async_write before reading again. With THREADS > 1 that many threads run
// the same io_context; a session's handlers never overlap because each one
// starts the next, so no strand is needed.
//
// Usage: asio_echo PORT [THREADS]   (listens on 127.0.0.1, prints nothing per connection)
// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>,
// which g++ 12 in C++20 mode no longer pulls in indirectly; include it first.
#include <utility>

#include <boost/asio.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

using boost::asio::ip::tcp;

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(tcp::socket socket) : socket_(std::move(socket)) {}

  void start() { do_read(); }

 private:
  void do_read() {
    auto self = shared_from_this();
    socket_.async_read_some(boost::asio::buffer(data_),
                            [this, self](boost::system::error_code ec, std::size_t n) {
                              if (!ec) do_write(n);
                            });
  }

  void do_write(std::size_t n) {
    auto self = shared_from_this();
    boost::asio::async_write(socket_, boost::asio::buffer(data_, n),
                             [this, self](boost::system::error_code ec, std::size_t) {
                               if (!ec) do_read();
                             });
  }

  tcp::socket socket_;
  std::array<char, 16 * 1024> data_;
};

class Server {
 public:
  Server(boost::asio::io_context& io, unsigned short port)
      : acceptor_(io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port)) {
    do_accept();
  }

 private:
  void do_accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (!ec) {
        socket.set_option(tcp::no_delay(true), ec);
        std::make_shared<Session>(std::move(socket))->start();
      }
      do_accept();
    });
  }

  tcp::acceptor acceptor_;
};

}  // namespace

int main(int argc, char* argv[]) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PORT [THREADS]\n", argv[0]);
    return 2;
  }
  const auto port = static_cast<unsigned short>(std::atoi(argv[1]));
  const int threads = argc > 2 ? std::max(1, std::atoi(argv[2])) : 1;
  try {
    boost::asio::io_context io(threads);
    Server server(io, port);
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
    io.run();
    for (auto& t : pool) t.join();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asio_echo: %s\n", e.what());
    return 1;
  }
  return 0;
}
