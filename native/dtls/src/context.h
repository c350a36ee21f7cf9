// Context: an SSL_CTX (server or client) as a JavaScript object and, for servers, the stateless
// listener: one shared SSL object that answers ClientHellos with HelloVerifyRequests and becomes a
// peer's connection only once its cookie is valid.
#pragma once

#include <napi.h>
#include <openssl/ssl.h>

#include <memory>

#include "pipe.h"
#include "shared_context.h"

namespace seng_dtls {

class Context : public Napi::ObjectWrap<Context> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Context(const Napi::CallbackInfo &info);
  ~Context() override;

 private:
  std::shared_ptr<SharedContext> shared_;
  SSL *listener_ = nullptr;
  std::unique_ptr<Pipe> listenerPipe_;
  BIO_ADDR *clientAddr_ = nullptr;
  int fd_ = -1;  // the server's UDP socket (not owned)

  void freeListener();
  void newListener(Napi::Env env);
  void freeAll();
  void requireLive(Napi::Env env) const;

  Napi::Value Listen(const Napi::CallbackInfo &info);
  Napi::Value CookieValid(const Napi::CallbackInfo &info);
  Napi::Value Connect(const Napi::CallbackInfo &info);
  Napi::Value RotateCookieSecret(const Napi::CallbackInfo &info);
  Napi::Value SetFd(const Napi::CallbackInfo &info);
  Napi::Value Free(const Napi::CallbackInfo &info);
};

}  // namespace seng_dtls
