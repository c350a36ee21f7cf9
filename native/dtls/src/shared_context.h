// What a Context shares with every connection made from it: the SSL_CTX, the link MTU and the
// cookie secrets. Owned by the Context and by each Conn (shared_ptr), so a Conn keeps working
// after its Context is freed.
#pragma once

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <cstdint>

#include "common.h"

namespace seng_dtls {

struct SharedContext {
  SSL_CTX *ctx = nullptr;
  bool server = false;
  long linkMtu = 1500;
  uint8_t secret[2][32]{};  // cookie secrets: current, previous
  bool havePrevious = false;
  // One HMAC-SHA256 context for the cookies, made once and re-keyed per cookie (cookie.cc):
  // no algorithm fetch and no allocation per HelloVerifyRequest. Only the JavaScript thread
  // uses it (the cookie callbacks run inside Context::Listen).
  EVP_MAC_CTX *cookieMac = nullptr;

  SharedContext() { ++gLiveCtx; }
  ~SharedContext() {
    if (ctx != nullptr) SSL_CTX_free(ctx);
    EVP_MAC_CTX_free(cookieMac);
    OPENSSL_cleanse(secret, sizeof secret);
    --gLiveCtx;
  }
  SharedContext(const SharedContext &) = delete;
  SharedContext &operator=(const SharedContext &) = delete;
};

}  // namespace seng_dtls
