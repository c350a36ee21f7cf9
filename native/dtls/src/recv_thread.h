// RecvThread: the enclave → gateway data path on a thread of its own, so that nothing JavaScript
// does (handshakes, attestation, policy reloads, logging) stalls forwarding of established
// sessions. The thread owns the reads of an Endpoint's UDP socket: it waits in poll(2), reads
// batches with recvmmsg(2) (with UDP_GRO on the socket, a read may hold several datagrams of one
// peer, split at the UDP_GRO control message's gso_size: seng_udp_gro_split; SENG_UDP_GRO=0
// turns it off) and looks each datagram's peer (IPv4 address and port) up in a table of
// routed sessions that JavaScript keeps up to date (route when a session starts forwarding,
// unroute when it ends):
//
//   - a datagram of a routed peer whose records are all application data (the content type is in
//     clear text in each record header) is opened here with the session's record layer (replay
//     window and receive cipher, under the record layer's receive lock), each packet is checked
//     with the session's forwarder rule (tun_forward.h: oversize, malformed, spoofed, in the
//     gateway's order) and written to the TUN device (through the thread's own TunWriter on an
//     offload device, coalesced per batch); records that do not open are counted and dropped
//     (replayed, forged, other) as the JavaScript path does;
//   - everything else (unknown peers: cookie exchange and handshakes; alerts, close_notify,
//     retransmitted handshake flights; datagrams of sessions whose record layer is gone) is copied
//     into a bounded queue as it came, and the records the rule leaves to JavaScript are queued
//     decrypted; uv_async tells the JavaScript thread, which drains the queue into the endpoint's
//     usual batch callback. A full queue drops (counted), as a full socket buffer would.
//
// Locking: the route table, its per-session counters and last-receive stamps are under one mutex
// (mu_), taken by the thread once per batch and by JavaScript for route/unroute/stats; the queue
// has its own mutex (queueMu_), held only to move items. A route holds a weak reference to the
// session's record layer: when the session closes (close_notify, alert, end), the reference
// expires at once and the peer's datagrams go to JavaScript until it unroutes. The thread alone
// owns its receive arena, plaintext buffer and writers.
//
// Lifecycle: the owning Endpoint starts the thread after its uv_async handle exists and stops it
// (eventfd wake-up, join) before closing that handle and the socket, so the thread never touches
// a closed descriptor or handle. Queued items own their bytes: a session that ends while items
// for it are queued leaves nothing dangling (JavaScript finds no session and drops them).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "../../common/seng_net.h"
#include "record_layer.h"
#include "thread_priority.h"
#include "tun_forward.h"
#include "tun_writer.h"

namespace seng_dtls {

class RecvThread {
 public:
  static constexpr unsigned kMaxBatch = 32;
  static constexpr size_t kQueueItems = 4096;
  static constexpr size_t kQueueBytes = 8u << 20;

  // A datagram (as received) or a decrypted record (plain) for JavaScript.
  struct Item {
    uint32_t ip = 0;  // host order
    uint16_t port = 0;
    bool plain = false;
    bool routed = false;  // counted in its route's inQueue until delivered
    std::vector<uint8_t> data;
  };

  // Per-session counters (read in bulk); lastRxMs: wall-clock ms of the last datagram taken here.
  struct RouteCounters {
    double lastRxMs = 0, packets = 0, bytes = 0, dropped = 0, oversize = 0, malformed = 0, spoofed = 0,
           lastSpoofedSource = 0, replayed = 0, forged = 0, other = 0, toJs = 0;
  };

  struct Counters {
    double wakeups = 0, datagrams = 0, opened = 0, queued = 0, queueDropped = 0, plainToJs = 0, expired = 0;
  };

  RecvThread(int udpFd, unsigned batch);
  ~RecvThread();
  RecvThread(const RecvThread &) = delete;
  RecvThread &operator=(const RecvThread &) = delete;

  // Starts the thread; notify() runs on it whenever items were queued. false and *error on failure.
  bool start(std::function<void()> notify, std::string *error);
  // Stops and joins the thread (idempotent); the table and queue are cleared.
  void stop();

  // JavaScript thread. route: replaces any route of ip:port; the forwarder's settings are copied.
  void route(uint32_t ip, uint16_t port, std::weak_ptr<RecordLayer> rl, const TunForwarder &forward);
  // The route's final counters, false when there was none.
  bool unroute(uint32_t ip, uint16_t port, RouteCounters *out);
  bool routeCounters(uint32_t ip, uint16_t port, RouteCounters *out);
  // [key, counters...] of every route.
  std::vector<std::pair<uint64_t, RouteCounters>> allRoutes();
  Counters counters();
  size_t routes();
  bool running() const { return running_; }
  bool gro() const { return gro_; }
  int readErrno() const { return readErrno_; }
  // The thread's id and scheduling priority (thread_priority.h), once it runs.
  ThreadPriority priority() const { return {priorityRaised_, nice_}; }
  long tid() const { return tid_; }

  // Moves up to max queued items to *out; returns how many remain.
  size_t take(std::vector<Item> *out, size_t max);
  // JavaScript has handled these items (taken with take()): their sessions' later datagrams may
  // be opened on the thread again.
  void delivered(const std::vector<Item> &items);

 private:
  struct Route {
    std::weak_ptr<RecordLayer> rl;
    TunForwarder forward;  // own copy: settings of the Conn's, counters of its own
    RouteCounters c;
    // Items of this session in the queue or being delivered: while there are any, its datagrams
    // follow them through the queue, so JavaScript sees the session's records in order (e.g. an
    // invalid packet before a later packet's reply, or before the session's end).
    uint32_t inQueue = 0;
  };

  static uint64_t key(uint32_t ip, uint16_t port) { return (static_cast<uint64_t>(ip) << 16) | port; }

  const int fd_;
  const unsigned batch_;
  const bool gro_;     // UDP_GRO is on: reads may hold several datagrams of one peer
  const size_t slot_;  // bytes per read (64 KiB with GRO)
  std::function<void()> notify_;
  int wakeFd_ = -1;
  std::thread thread_;
  std::atomic<bool> running_{false};
  std::atomic<bool> stop_{false};
  std::atomic<int> readErrno_{0};
  std::atomic<bool> priorityRaised_{false};
  std::atomic<int> nice_{0};
  std::atomic<long> tid_{0};

  std::mutex mu_;  // routes_, counters_
  std::unordered_map<uint64_t, Route> routes_;
  Counters counters_;

  std::mutex queueMu_;  // queue_, queueBytes_
  std::deque<Item> queue_;
  size_t queueBytes_ = 0;

  // The thread only.
  // batch_ reads of slot_ bytes, not zeroed: only the pages the kernel writes become resident
  // (an idle endpoint does not pay for 2 MiB of GRO slots).
  std::unique_ptr<uint8_t[]> arena_;
  iovec iov_[kMaxBatch]{};
  sockaddr_in addrs_[kMaxBatch]{};
  mmsghdr msgs_[kMaxBatch]{};
  union Control {
    cmsghdr align;
    char bytes[CMSG_SPACE(sizeof(int))];
  } controls_[kMaxBatch]{};
  uint32_t groEnds_[SENG_UDP_GRO_MAX_SEGS]{};
  std::vector<Item> pending_;  // this batch's items for JavaScript
  std::unordered_map<int, std::unique_ptr<TunWriter>> writers_;

  void run();
  void handleBatch(unsigned n);
  void handleDatagram(Route *route, RecordLayer *rl, uint8_t *d, size_t len, uint32_t ip, uint16_t port, double now);
  void openDatagram(Route *route, RecordLayer *rl, uint8_t *d, size_t n, uint32_t ip, uint16_t port);
  void pend(uint32_t ip, uint16_t port, bool plain, const uint8_t *d, size_t n, Route *route = nullptr);
  void settle(const std::vector<Item> &items);  // under mu_: the routes' inQueue of handled items
  void publish();
  TunWriter *writerFor(int fd);
};

// Whether every record of datagram d[0, n) is a complete application-data record (and there is at
// least one): only such datagrams are opened on the thread.
bool allApplicationData(const uint8_t *d, size_t n);

}  // namespace seng_dtls
