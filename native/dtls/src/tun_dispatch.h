// TunDispatch: the gateway → enclave data path, on a thread of its own so that nothing JavaScript
// does (handshakes, attestation, policy reloads) stalls it. The thread waits in poll(2) for the
// TUN device, reads the waiting packets in a batch, finds the session that owns each packet's
// destination IPv4 address in a table JavaScript keeps up to date (route / unroute, when a session
// becomes active / ends), seals each packet as one record with that session's native record layer
// and sends the batch on the send tunnel's (P+1) UDP socket (udp_send_batch.h: one sendmmsg(2),
// same-size records to one peer as UDP GSO runs; SENG_UDP_GSO=0 turns GSO off).
//
// Ownership: the thread owns its buffers; the route table and the counters are shared with the
// JavaScript thread under one mutex (taken once per batch by the thread); a route holds only a weak
// reference to a session's record layer, whose sending side has its own lock (record_layer.h).
// JavaScript reads the counters in bulk (stats, routeStats) and learns of a read error there.
//
// The enclave simulator (the client role) reads its own TUN device and has one session for
// everything: routeDefault(conn) routes every packet no address route claims to that session.
//
// Packets from the device are checked in the order of the gateway's rule (src/tunnel/packet.ts,
// routeDevicePacket): malformed (shorter than 20 bytes or not IPv4), unknown destination, oversize
// (longer than the MTU).
//
// A device opened with offload (IFF_VNET_HDR, vnetHdr = true) delivers frames: a virtio_net_hdr
// and a packet that may be a TSO super-packet of up to 64 KiB or lack its checksum; each frame is
// cut into packets of at most the MTU with complete checksums (seng_tun_read / seng_gso_split,
// native/common/seng_net.h) and each packet is sealed as one record (SPEC §1).
//
// Neither descriptor is owned: close() stops and joins the thread; the gateway must close the
// dispatch before the TUN device.
#pragma once

#include <napi.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "record_layer.h"
#include "udp_send_batch.h"

namespace seng_dtls {

class TunDispatch : public Napi::ObjectWrap<TunDispatch> {
 public:
  static constexpr unsigned kMaxBatch = 256;
  // Packets one batch may hold: batch_ reads, the last of which may split into many segments.
  static constexpr unsigned kMaxSegs = 256;
  static Napi::Function Init(Napi::Env env);
  explicit TunDispatch(const Napi::CallbackInfo &info);
  ~TunDispatch() override;

 private:
  struct Route {
    std::weak_ptr<RecordLayer> rl;  // expires when the session closes
    sockaddr_storage peer{};
    socklen_t peerLen = 0;
    double packets = 0, bytes = 0, oversize = 0;
  };
  struct Counters {
    double reads = 0, packets = 0, bytes = 0, malformed = 0, unknownDestination = 0, oversize = 0, sendFailed = 0,
           wakeups = 0, gsoFrames = 0, gsoSegments = 0, badFrames = 0, sendCalls = 0, udpGsoSends = 0,
           udpGsoRecords = 0;
  };

  // Set at construction, read by both threads.
  int tunFd_ = -1;
  int udpFd_ = -1;
  size_t mtu_ = 0;
  unsigned batch_ = 64;
  bool vnetHdr_ = false;
  std::atomic<bool> udpGso_{true};  // the sender still tries UDP GSO (read by stats())

  // JavaScript thread only.
  int wakeFd_ = -1;  // eventfd that tells the thread to stop
  std::thread thread_;

  std::atomic<bool> running_{false};
  std::atomic<bool> stop_{false};
  std::atomic<int> readErrno_{0};
  std::atomic<bool> priorityRaised_{false};  // thread_priority.h, set when the thread starts
  std::atomic<int> nice_{0};
  std::atomic<long> tid_{0};

  std::mutex mu_;  // routes_, counters_
  std::unordered_map<uint32_t, Route> routes_;
  std::unique_ptr<Route> defaultRoute_;  // packets no entry of routes_ claims
  Counters counters_;

  // The thread only.
  std::vector<uint8_t> frameBuf_;  // one frame (vnetHdr_ only)
  std::vector<uint8_t> readBuf_;   // the batch's packets, back to back
  std::vector<uint32_t> readEnds_; // end offset of each packet in readBuf_
  double batchFrames_ = 0, batchGsoFrames_ = 0, batchGsoSegments_ = 0, batchBadFrames_ = 0;
  std::vector<uint8_t> sealBuf_;  // batch_ records of up to mtu_ + RecordLayer::kOverhead bytes
  std::unique_ptr<UdpSendBatch> sender_;

  void run();
  bool readBatch(unsigned *count);
  unsigned sealBatch(unsigned count);
  bool queuePacket(const uint8_t *p, size_t n, unsigned slot);
  Route *findRoute(uint32_t destination);
  void sendQueued();
  void stopThread();

  Napi::Value Start(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);
  Napi::Value AddRoute(const Napi::CallbackInfo &info);
  Napi::Value RemoveRoute(const Napi::CallbackInfo &info);
  Napi::Value AddDefaultRoute(const Napi::CallbackInfo &info);
  Napi::Value RemoveDefaultRoute(const Napi::CallbackInfo &info);
  Napi::Value Stats(const Napi::CallbackInfo &info);
  Napi::Value RouteStats(const Napi::CallbackInfo &info);
};

}  // namespace seng_dtls
