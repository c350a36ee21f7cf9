// The enclave → gateway receive thread (see recv_thread.h).
#include "recv_thread.h"

#include <arpa/inet.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include "../../common/seng_net.h"
#include "common.h"

namespace seng_dtls {

namespace {

constexpr size_t kSlot = kMaxPlain + 2048;  // the largest DTLS record plus headers (as endpoint.cc)
constexpr size_t kGroSlot = 65536;          // a UDP GRO read: datagrams of one peer, at most 64 KiB

// Asks the kernel to coalesce datagrams of one peer into one read (UDP_GRO; SENG_UDP_GRO=0: no).
bool enableGro(int fd) {
  const char *env = std::getenv("SENG_UDP_GRO");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  const int one = 1;
  return setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
}

// The gso_size of a read's UDP_GRO control message; 0 when there is none (one datagram).
int groSize(const msghdr &m) {
  for (cmsghdr *c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(const_cast<msghdr *>(&m), c)) {
    if (c->cmsg_level != SOL_UDP || c->cmsg_type != UDP_GRO) continue;
    if (c->cmsg_len < CMSG_LEN(sizeof(int))) return -1;
    int size = 0;
    std::memcpy(&size, CMSG_DATA(c), sizeof size);
    return size;
  }
  return 0;
}

double wallClockMs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) * 1000.0 + static_cast<double>(ts.tv_nsec / 1000000);
}

}  // namespace

bool allApplicationData(const uint8_t *d, size_t n) {
  if (n == 0) return false;
  size_t pos = 0;
  while (pos < n) {
    const size_t len = RecordLayer::framedLength(d + pos, n - pos);
    if (len == 0 || d[pos] != kApplicationData) return false;
    pos += len;
  }
  return true;
}

RecvThread::RecvThread(int udpFd, unsigned batch)
    : fd_(udpFd), batch_(batch < 1 || batch > kMaxBatch ? kMaxBatch : batch), gro_(enableGro(udpFd)), slot_(gro_ ? kGroSlot : kSlot) {
  arena_.reset(new uint8_t[slot_ * batch_]);
  for (unsigned i = 0; i < batch_; i++) {
    iov_[i].iov_base = arena_.get() + i * slot_;
    iov_[i].iov_len = slot_;
  }
}

RecvThread::~RecvThread() { stop(); }

bool RecvThread::start(std::function<void()> notify, std::string *error) {
  if (running_ || stop_ || wakeFd_ >= 0) {
    *error = "receive thread already started or stopped";
    return false;
  }
  notify_ = std::move(notify);
  wakeFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakeFd_ < 0) {
    *error = std::string("eventfd: ") + std::strerror(errno);
    return false;
  }
  running_ = true;
  try {
    thread_ = std::thread([this] { run(); });
  } catch (const std::system_error &e) {
    running_ = false;
    close(wakeFd_);
    wakeFd_ = -1;
    *error = std::string("cannot start the receive thread: ") + e.what();
    return false;
  }
  return true;
}

void RecvThread::stop() {
  stop_ = true;
  if (thread_.joinable()) {
    const uint64_t one = 1;
    ssize_t w;
    do {
      w = write(wakeFd_, &one, sizeof one);
    } while (w < 0 && errno == EINTR);
    thread_.join();
  }
  running_ = false;
  if (wakeFd_ >= 0) {
    close(wakeFd_);
    wakeFd_ = -1;
  }
  for (auto &[fd, w] : writers_) TunWriter::retire(std::move(w));
  writers_.clear();
  {
    std::lock_guard<std::mutex> guard(mu_);
    routes_.clear();
  }
  std::lock_guard<std::mutex> guard(queueMu_);
  queue_.clear();
  queueBytes_ = 0;
}

void RecvThread::route(uint32_t ip, uint16_t port, std::weak_ptr<RecordLayer> rl, const TunForwarder &forward) {
  Route r;
  r.rl = std::move(rl);
  r.forward = forward;
  r.forward.resetCounters();
  std::lock_guard<std::mutex> guard(mu_);
  Route &slot = routes_[key(ip, port)];
  r.inQueue = slot.inQueue;  // a route made again: its items still queued keep counting
  slot = std::move(r);
}

bool RecvThread::unroute(uint32_t ip, uint16_t port, RouteCounters *out) {
  std::lock_guard<std::mutex> guard(mu_);
  auto it = routes_.find(key(ip, port));
  if (it == routes_.end()) return false;
  *out = it->second.c;
  routes_.erase(it);
  return true;
}

bool RecvThread::routeCounters(uint32_t ip, uint16_t port, RouteCounters *out) {
  std::lock_guard<std::mutex> guard(mu_);
  auto it = routes_.find(key(ip, port));
  if (it == routes_.end()) return false;
  *out = it->second.c;
  return true;
}

std::vector<std::pair<uint64_t, RecvThread::RouteCounters>> RecvThread::allRoutes() {
  std::lock_guard<std::mutex> guard(mu_);
  std::vector<std::pair<uint64_t, RouteCounters>> all;
  all.reserve(routes_.size());
  for (const auto &[k, r] : routes_) all.emplace_back(k, r.c);
  return all;
}

RecvThread::Counters RecvThread::counters() {
  std::lock_guard<std::mutex> guard(mu_);
  return counters_;
}

size_t RecvThread::routes() {
  std::lock_guard<std::mutex> guard(mu_);
  return routes_.size();
}

size_t RecvThread::take(std::vector<Item> *out, size_t max) {
  std::lock_guard<std::mutex> guard(queueMu_);
  while (max-- > 0 && !queue_.empty()) {
    queueBytes_ -= queue_.front().data.size();
    out->push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  return queue_.size();
}

// The thread: wait for the socket (or the stop signal), read batches until it is empty.
void RecvThread::run() {
  tid_ = static_cast<long>(syscall(SYS_gettid));
  const ThreadPriority prio = raiseForwardingPriority();  // forwarding before the control plane
  nice_ = prio.nice;
  priorityRaised_ = prio.raised;
  pollfd fds[2] = {{fd_, POLLIN, 0}, {wakeFd_, POLLIN, 0}};
  while (!stop_) {
    const int r = poll(fds, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      readErrno_ = errno;
      break;
    }
    if (stop_ || (fds[1].revents & POLLIN) != 0) break;
    if ((fds[0].revents & POLLNVAL) != 0) {
      readErrno_ = EBADF;
      break;
    }
    for (;;) {
      for (unsigned i = 0; i < batch_; i++) {
        std::memset(&msgs_[i].msg_hdr, 0, sizeof msgs_[i].msg_hdr);
        msgs_[i].msg_hdr.msg_iov = &iov_[i];
        msgs_[i].msg_hdr.msg_iovlen = 1;
        msgs_[i].msg_hdr.msg_name = &addrs_[i];
        msgs_[i].msg_hdr.msg_namelen = sizeof addrs_[i];
        if (gro_) {
          msgs_[i].msg_hdr.msg_control = controls_[i].bytes;
          msgs_[i].msg_hdr.msg_controllen = sizeof controls_[i].bytes;
        }
        msgs_[i].msg_len = 0;
      }
      int n;
      do {
        n = recvmmsg(fd_, msgs_, batch_, MSG_DONTWAIT, nullptr);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) break;  // EAGAIN (or e.g. ECONNREFUSED from ICMP: nothing to read)
      handleBatch(static_cast<unsigned>(n));
      if (stop_ || static_cast<unsigned>(n) < batch_) break;
    }
    ERR_clear_error();  // this thread's OpenSSL error queue
  }
  running_ = false;
}

void RecvThread::handleBatch(unsigned n) {
  const double now = wallClockMs();
  {
    std::lock_guard<std::mutex> guard(mu_);
    counters_.wakeups += 1;
    for (unsigned i = 0; i < n; i++) {
      const msghdr &m = msgs_[i].msg_hdr;
      if ((m.msg_flags & MSG_TRUNC) != 0 || m.msg_namelen < sizeof(sockaddr_in) || addrs_[i].sin_family != AF_INET ||
          msgs_[i].msg_len > slot_ || msgs_[i].msg_len == 0) {
        counters_.datagrams += 1;
        continue;  // the endpoint drops these too (not IPv4, truncated)
      }
      uint8_t *d = arena_.get() + i * slot_;
      const size_t len = msgs_[i].msg_len;
      const uint32_t ip = ntohl(addrs_[i].sin_addr.s_addr);
      const uint16_t port = ntohs(addrs_[i].sin_port);
      // A UDP GRO read holds datagrams of one peer back to back, each one datagram as sent.
      const int count = seng_udp_gro_split(len, gro_ ? groSize(m) : 0, groEnds_, SENG_UDP_GRO_MAX_SEGS);
      if (count <= 0) {
        counters_.datagrams += 1;
        ++gGroMalformed;
        continue;
      }
      if (count > 1) {
        ++gGroReads;
        gGroDatagrams += static_cast<uint64_t>(count);
      }
      counters_.datagrams += count;
      // One peer per read: its route and record layer are looked up once for all its datagrams.
      auto it = routes_.find(key(ip, port));
      Route *route = it == routes_.end() ? nullptr : &it->second;
      std::shared_ptr<RecordLayer> rl = route != nullptr ? route->rl.lock() : nullptr;
      size_t off = 0;
      for (int k = 0; k < count; k++) {
        handleDatagram(route, rl.get(), d + off, groEnds_[k] - off, ip, port, now);
        off = groEnds_[k];
      }
    }
  }
  for (auto &[fd, w] : writers_) w->flush();
  publish();
}

// One datagram of a peer, under mu_: opened here (a routed session's application data) or queued.
// route: the peer's entry (nullptr: not routed); rl: its record layer (nullptr: the session ended).
void RecvThread::handleDatagram(Route *route, RecordLayer *rl, uint8_t *d, size_t len, uint32_t ip, uint16_t port,
                                double now) {
  if (route == nullptr) {
    pend(ip, port, false, d, len);
    return;
  }
  if (rl == nullptr) {  // the session ended and JavaScript has not unrouted it yet
    counters_.expired += 1;
    pend(ip, port, false, d, len);
    return;
  }
  route->c.lastRxMs = now;
  if (route->inQueue > 0 || !allApplicationData(d, len)) {
    route->c.toJs += 1;
    pend(ip, port, false, d, len, route);
    return;
  }
  counters_.opened += 1;
  openDatagram(route, rl, d, len, ip, port);
}

// Opens every record of an application-data datagram of a routed session, in place in the arena:
// the plaintext goes to the device from there (an offload device's writer borrows it until the
// batch's flush, before the next read into the arena).
void RecvThread::openDatagram(Route *route, RecordLayer *rl, uint8_t *d, size_t n, uint32_t ip, uint16_t port) {
  size_t pos = 0;
  while (pos < n) {
    const size_t len = RecordLayer::framedLength(d + pos, n - pos);  // allApplicationData checked framing
    if (len == 0) break;
    size_t plain = 0;
    uint8_t type = 0;
    const RecordLayer::Opened r = rl->openInPlace(d + pos, len, &plain, &type);
    const uint8_t *p = d + pos + RecordLayer::kPlainOffset;
    pos += len;
    if (r != RecordLayer::Opened::Ok) {
      if (r == RecordLayer::Opened::Replayed)
        route->c.replayed += 1;
      else if (r == RecordLayer::Opened::Forged)
        route->c.forged += 1;
      else
        route->c.other += 1;
      continue;
    }
    if (plain == 0) continue;
    TunForwarder &f = route->forward;
    if (f.offer(p, plain, f.vnetHdr() ? writerFor(f.fd()) : nullptr)) continue;
    counters_.plainToJs += 1;
    pend(ip, port, true, p, plain, route);  // the rule leaves it to JavaScript
  }
  TunForwarder &f = route->forward;
  route->c.packets = f.packets;
  route->c.bytes = f.bytes;
  route->c.dropped = f.dropped;
  route->c.oversize = f.oversize;
  route->c.malformed = f.malformed;
  route->c.spoofed = f.spoofed;
  route->c.lastSpoofedSource = f.lastSpoofedSource;
}

void RecvThread::pend(uint32_t ip, uint16_t port, bool plain, const uint8_t *d, size_t n, Route *route) {
  Item item;
  item.ip = ip;
  item.port = port;
  item.plain = plain;
  item.routed = route != nullptr;
  if (route != nullptr) route->inQueue += 1;
  item.data.assign(d, d + n);
  pending_.push_back(std::move(item));
}

// Moves this batch's items into the queue (a full queue drops them) and wakes JavaScript.
void RecvThread::publish() {
  if (pending_.empty()) return;
  double dropped = 0, queued = 0;
  std::vector<Item> lost;
  {
    std::lock_guard<std::mutex> guard(queueMu_);
    for (Item &item : pending_) {
      if (queue_.size() >= kQueueItems || queueBytes_ + item.data.size() > kQueueBytes) {
        dropped += 1;
        if (item.routed) lost.push_back(std::move(item));
        continue;
      }
      queueBytes_ += item.data.size();
      queue_.push_back(std::move(item));
      queued += 1;
    }
  }
  pending_.clear();
  {
    std::lock_guard<std::mutex> guard(mu_);
    counters_.queued += queued;
    counters_.queueDropped += dropped;
    settle(lost);
  }
  if (queued > 0 && notify_) notify_();
}

void RecvThread::delivered(const std::vector<Item> &items) {
  std::lock_guard<std::mutex> guard(mu_);
  settle(items);
}

void RecvThread::settle(const std::vector<Item> &items) {
  for (const Item &item : items) {
    if (!item.routed) continue;
    auto it = routes_.find(key(item.ip, item.port));
    // A route made again since (or removed) starts from zero: nothing to count down.
    if (it != routes_.end() && it->second.inQueue > 0) it->second.inQueue -= 1;
  }
}

TunWriter *RecvThread::writerFor(int fd) {
  auto &slot = writers_[fd];
  if (!slot) slot = TunWriter::makeOwned(fd);
  return slot.get();
}

}  // namespace seng_dtls
