// TunDispatch: the gateway → enclave data path without JavaScript per packet. A libuv poll handle
// on node's loop wakes it when the TUN device is readable; it reads the waiting packets in a batch,
// finds the session that owns each packet's destination IPv4 address in a table JavaScript keeps
// up to date (route / unroute, when a session becomes active / ends), seals each packet as one
// record with that session's native record layer and sends the batch with sendmmsg(2) on the
// send tunnel's (P+1) UDP socket. JavaScript reads the counters in bulk.
//
// Packets from the device are checked in the order of the gateway's rule (src/tunnel/packet.ts,
// routeDevicePacket): malformed (shorter than 20 bytes or not IPv4), unknown destination, oversize
// (longer than the MTU).
//
// Neither descriptor is owned: close() (or dropping the object) stops polling; the gateway must
// close the dispatch before the TUN device.
#pragma once

#include <napi.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "record_layer.h"

namespace seng_dtls {

class TunDispatch : public Napi::ObjectWrap<TunDispatch> {
 public:
  static constexpr unsigned kMaxBatch = 256;
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
           wakeups = 0;
  };

  int tunFd_ = -1;
  int udpFd_ = -1;
  size_t mtu_ = 0;
  unsigned batch_ = 64;
  int readErrno_ = 0;
  uv_poll_t poll_{};
  bool polling_ = false;
  bool closing_ = false;
  std::unordered_map<uint32_t, Route> routes_;
  Counters counters_;
  std::vector<uint8_t> readBuf_;   // one packet read from the device
  std::vector<uint8_t> sealBuf_;   // batch_ records of up to mtu_ + RecordLayer::kOverhead bytes
  std::vector<sockaddr_storage> names_;
  std::vector<iovec> iov_;
  std::vector<mmsghdr> msgs_;

  void drain();
  bool queuePacket(const uint8_t *p, size_t n, unsigned slot);
  void sendQueued(unsigned count);
  void stopPolling();
  static void OnPoll(uv_poll_t *h, int status, int events);
  static void OnClosed(uv_handle_t *h);

  Napi::Value Start(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);
  Napi::Value AddRoute(const Napi::CallbackInfo &info);
  Napi::Value RemoveRoute(const Napi::CallbackInfo &info);
  Napi::Value Stats(const Napi::CallbackInfo &info);
  Napi::Value RouteStats(const Napi::CallbackInfo &info);
};

}  // namespace seng_dtls
