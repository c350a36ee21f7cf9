// Stateless DTLS cookies (see cookie.h).
#include "cookie.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "pipe.h"
#include "shared_context.h"

namespace seng_dtls {

namespace {

constexpr size_t kCookieLen = 32;  // HMAC-SHA256
// OpenSSL's buffer is DTLS1_COOKIE_LENGTH (255) bytes.
static_assert(kCookieLen <= DTLS1_COOKIE_LENGTH, "cookie too long");

bool cookieFor(const SharedContext *cs, int which, const Pipe *p, uint8_t out[kCookieLen]) {
  unsigned int mdLen = 0;
  if (p->cookieKey.empty()) return false;
  if (HMAC(EVP_sha256(), cs->secret[which], sizeof cs->secret[which], p->cookieKey.data(), p->cookieKey.size(), out,
           &mdLen) == nullptr)
    return false;
  return mdLen == kCookieLen;
}

void parties(SSL *ssl, Pipe **p, SharedContext **cs) {
  *p = static_cast<Pipe *>(SSL_get_app_data(ssl));
  *cs = static_cast<SharedContext *>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
}

}  // namespace

int generateCookie(SSL *ssl, unsigned char *cookie, unsigned int *cookieLen) {
  Pipe *p;
  SharedContext *cs;
  parties(ssl, &p, &cs);
  if (p == nullptr || cs == nullptr || cookie == nullptr || cookieLen == nullptr) return 0;
  if (!cookieFor(cs, 0, p, cookie)) return 0;
  *cookieLen = kCookieLen;
  return 1;
}

int verifyCookie(SSL *ssl, const unsigned char *cookie, unsigned int cookieLen) {
  Pipe *p;
  SharedContext *cs;
  parties(ssl, &p, &cs);
  if (p == nullptr || cs == nullptr || cookie == nullptr || cookieLen != kCookieLen) return 0;
  uint8_t expect[kCookieLen];
  for (int which = 0; which < (cs->havePrevious ? 2 : 1); which++) {
    if (cookieFor(cs, which, p, expect) && CRYPTO_memcmp(expect, cookie, kCookieLen) == 0) return 1;
  }
  return 0;
}

}  // namespace seng_dtls
