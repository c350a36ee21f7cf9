// Endpoint: a UDP socket read with recvmmsg(2) in batches, driven by a libuv poll handle on node's
// loop. JavaScript gets onBatch(count) with, for datagram i, meta[4i..4i+3] = offset in the arena,
// length (0 = truncated or not IPv4: drop), IPv4 address (host order), port. The arena is reused by
// the next batch: everything must be consumed during the callback. Sending is not done here: every
// connection writes its records to the socket itself (pipe.h).
//
// Threaded (the 4th constructor argument): instead of a libuv poll handle, a RecvThread
// (recv_thread.h) reads the socket; it forwards the datagrams of routed sessions itself and queues
// the rest, which a uv_async handle drains into the same onBatch(count) callback on node's loop.
// A queued decrypted record (one the forwarder's rule leaves to JavaScript) has bit 16 set in its
// port word. route/unroute/routeStats/threadStats manage and read the thread's table.
#pragma once

#include <napi.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include <memory>
#include <vector>

#include "recv_thread.h"

namespace seng_dtls {

class Endpoint : public Napi::ObjectWrap<Endpoint> {
 public:
  static constexpr unsigned kBatch = 32;
  static Napi::Function Init(Napi::Env env);
  explicit Endpoint(const Napi::CallbackInfo &info);
  ~Endpoint() override;

 private:
  int fd_ = -1;
  unsigned batch_ = kBatch;
  napi_env env_ = nullptr;
  uv_poll_t poll_{};
  uv_async_t wake_{};                  // threaded: the thread queued items
  std::unique_ptr<RecvThread> recv_;  // threaded only
  bool threaded_ = false;
  bool polling_ = false;  // a libuv handle (poll_ or wake_) is open
  bool closing_ = false;
  Napi::FunctionReference onBatch_;
  Napi::FunctionReference onClosed_;
  std::unique_ptr<Napi::AsyncContext> async_;
  Napi::Reference<Napi::Buffer<uint8_t>> arena_;
  Napi::Reference<Napi::Uint32Array> meta_;
  uint8_t *arenaData_ = nullptr;
  uint32_t *metaData_ = nullptr;
  iovec iov_[kBatch]{};
  sockaddr_in addrs_[kBatch]{};
  mmsghdr msgs_[kBatch]{};

  void closeFd();
  void release();
  std::vector<RecvThread::Item> taken_;  // threaded: items being delivered

  void drain();
  void drainQueue();
  bool deliver(unsigned n);
  uv_handle_t *handle() { return threaded_ ? reinterpret_cast<uv_handle_t *>(&wake_) : reinterpret_cast<uv_handle_t *>(&poll_); }
  static void OnPoll(uv_poll_t *h, int status, int events);
  static void OnWake(uv_async_t *h);
  static void OnClosed(uv_handle_t *h);

  Napi::Value Arena(const Napi::CallbackInfo &info);
  Napi::Value Meta(const Napi::CallbackInfo &info);
  Napi::Value Fd(const Napi::CallbackInfo &info);
  Napi::Value Start(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);
  Napi::Value Route(const Napi::CallbackInfo &info);
  Napi::Value Unroute(const Napi::CallbackInfo &info);
  Napi::Value RouteStats(const Napi::CallbackInfo &info);
  Napi::Value ThreadStats(const Napi::CallbackInfo &info);
};

// openUdp(address, port, bufferBytes): { fd, port }: a non-blocking UDP socket bound to
// address:port (0 = ephemeral) with SO_RCVBUF/SO_SNDBUF requested.
Napi::Value OpenUdp(const Napi::CallbackInfo &info);

// closeFd(fd): for a socket that never made it into an Endpoint.
Napi::Value CloseFd(const Napi::CallbackInfo &info);

}  // namespace seng_dtls
