// Conn: one DTLS association (server or client side) as a JavaScript object. It owns its SSL
// object and pipe, drives the handshake, holds the server's final flight until the verdict, reads
// records into a caller-provided slab (or hands them to the TUN forwarder) and encrypts records.
//
// Server side, once the verdict accepts the peer (release()), the association is handed off to the
// native record layer: the keys, sequence numbers and a copy of our final flight are kept, the SSL
// object is freed, and records are sealed and opened by record_layer.cc. The client side keeps its
// SSL object (so the tests also check the native record layer against OpenSSL's) unless it asks
// for the same handoff (handOff(), the enclave simulator's batched data path).
#pragma once

#include <napi.h>
#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <vector>

#include "pipe.h"
#include "record_layer.h"
#include "shared_context.h"
#include "tun_forward.h"

namespace seng_dtls {

// Per-environment data of the addon: the Conn constructor (Conn objects are only made natively).
struct AddonData {
  Napi::FunctionReference connCtor;
};

class Conn : public Napi::ObjectWrap<Conn> {
 public:
  static Napi::Function Init(Napi::Env env);

  // A new JavaScript Conn that takes ownership of ssl (counted in gLiveSsl) and pipe; on failure
  // the SSL is freed and the exception propagates.
  static Napi::Object Create(Napi::Env env, SSL *ssl, std::unique_ptr<Pipe> pipe, std::shared_ptr<SharedContext> shared);

  explicit Conn(const Napi::CallbackInfo &info);
  ~Conn() override;

  // The Conn behind a JavaScript value, or nullptr when it is not one.
  static Conn *FromValue(Napi::Env env, Napi::Value v);

  // For TunDispatch: the record layer and peer of an open connection that was handed off to the
  // native record layer; false otherwise. The weak reference expires when the connection closes.
  bool sendPath(std::weak_ptr<RecordLayer> *rl, sockaddr_storage *peer, socklen_t *peerLen) const;
  // For the endpoint's receive thread: the record layer and forwarder settings of an open,
  // handed-off connection whose forwarding is on; false otherwise.
  bool recvPath(std::weak_ptr<RecordLayer> *rl, TunForwarder *forward) const;

 private:
  enum class State { Handshaking, Held, Open, Closed };

  SSL *ssl_ = nullptr;                // until the handoff (server) / for good (client)
  std::shared_ptr<RecordLayer> rl_;  // after the handoff; TunDispatch routes hold weak references
  std::unique_ptr<Pipe> pipe_;
  std::shared_ptr<SharedContext> shared_;
  bool server_ = false;
  State state_ = State::Handshaking;
  std::string error_;
  size_t maxRecord_ = 0;
  // OpenSSL's static names of the negotiated suite and version (no copy per connection).
  const char *cipher_ = "";
  const char *version_ = "";
  TunForwarder forward_;
  // Our final flight (datagrams back to back, end offsets; moved from the pipe, not copied),
  // resent when the client retransmits its Finished because ours was lost; dropped once the
  // client's first application record proves that it has our Finished.
  std::vector<uint8_t> flight_;
  std::vector<size_t> flightEnds_;
  // The unread rest of a datagram when the slab filled up (F_MORE), read by input(null).
  std::vector<uint8_t> pending_;
  // Received records the record layer discarded, by reason (info().discarded).
  double discardedReplayed_ = 0, discardedForged_ = 0, discardedOther_ = 0;

  bool live() const { return ssl_ != nullptr || rl_ != nullptr; }
  void release();
  void freeSsl();
  void fail(const char *what);
  bool handOff();
  uint32_t readRecords(uint8_t *slab, size_t slabLen, size_t off, uint32_t *lens, size_t maxCount, uint32_t *count);
  uint32_t openRecords(const uint8_t *d, size_t n, uint8_t *slab, size_t slabLen, size_t off, uint32_t *lens,
                       size_t maxCount, uint32_t *count);
  uint32_t onControlRecord(uint8_t type, const uint8_t *p, size_t n);
  bool sealAndSend(uint8_t type, const uint8_t *p, size_t n);
  void sendAlert(uint8_t level, uint8_t description);
  void resendFlight();
  void dropFlight();

  Napi::Value Input(const Napi::CallbackInfo &info);
  Napi::Value Timeout(const Napi::CallbackInfo &info);
  Napi::Value NextTimeout(const Napi::CallbackInfo &info);
  Napi::Value Release(const Napi::CallbackInfo &info);
  Napi::Value HandOff(const Napi::CallbackInfo &info);
  Napi::Value Reject(const Napi::CallbackInfo &info);
  Napi::Value Send(const Napi::CallbackInfo &info);
  Napi::Value Shutdown(const Napi::CallbackInfo &info);
  Napi::Value PeerChain(const Napi::CallbackInfo &info);
  Napi::Value Info(const Napi::CallbackInfo &info);
  Napi::Value SetForward(const Napi::CallbackInfo &info);
  Napi::Value ForwardStats(const Napi::CallbackInfo &info);
  Napi::Value Free(const Napi::CallbackInfo &info);
};

}  // namespace seng_dtls
