// Conn: one DTLS association (server or client side) as a JavaScript object. It owns its SSL
// object and pipe, drives the handshake, holds the server's final flight until the verdict, reads
// records into a caller-provided slab (or hands them to the TUN forwarder) and encrypts records.
#pragma once

#include <napi.h>
#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "pipe.h"
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

 private:
  enum class State { Handshaking, Held, Open, Closed };

  SSL *ssl_ = nullptr;
  std::unique_ptr<Pipe> pipe_;
  std::shared_ptr<SharedContext> shared_;
  bool server_ = false;
  State state_ = State::Handshaking;
  std::string error_;
  size_t maxRecord_ = 0;
  TunForwarder forward_;

  void release();
  void fail(const char *what);
  uint32_t readRecords(uint8_t *slab, size_t slabLen, size_t off, uint32_t *lens, size_t maxCount, uint32_t *count);

  Napi::Value Input(const Napi::CallbackInfo &info);
  Napi::Value Timeout(const Napi::CallbackInfo &info);
  Napi::Value NextTimeout(const Napi::CallbackInfo &info);
  Napi::Value Release(const Napi::CallbackInfo &info);
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
