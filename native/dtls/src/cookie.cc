// Stateless DTLS cookies (see cookie.h).
#include "cookie.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "pipe.h"
#include "shared_context.h"

namespace seng_dtls {

namespace {

constexpr size_t kCookieLen = 32;  // HMAC-SHA256
// OpenSSL's buffer is DTLS1_COOKIE_LENGTH (255) bytes.
static_assert(kCookieLen <= DTLS1_COOKIE_LENGTH, "cookie too long");

// The context with HMAC-SHA256 selected, made on first use and kept for the SharedContext's life.
EVP_MAC_CTX *cookieMac(SharedContext *cs) {
  if (cs->cookieMac != nullptr) return cs->cookieMac;
  EVP_MAC *mac = EVP_MAC_fetch(nullptr, OSSL_MAC_NAME_HMAC, nullptr);
  if (mac == nullptr) return nullptr;
  EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
  EVP_MAC_free(mac);  // the context holds its own reference
  if (ctx == nullptr) return nullptr;
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_construct_end()};
  if (EVP_MAC_CTX_set_params(ctx, params) != 1) {
    EVP_MAC_CTX_free(ctx);
    return nullptr;
  }
  cs->cookieMac = ctx;
  return ctx;
}

bool cookieFor(SharedContext *cs, int which, const std::vector<uint8_t> &key, uint8_t out[kCookieLen]) {
  if (key.empty()) return false;
  EVP_MAC_CTX *ctx = cookieMac(cs);
  if (ctx == nullptr) return false;
  // init with a key resets the context (also after a final), so one context serves every cookie.
  size_t mdLen = 0;
  if (EVP_MAC_init(ctx, cs->secret[which], sizeof cs->secret[which], nullptr) != 1 ||
      EVP_MAC_update(ctx, key.data(), key.size()) != 1 ||
      EVP_MAC_final(ctx, out, &mdLen, kCookieLen) != 1)
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
  if (!cookieFor(cs, 0, p->cookieKey, cookie)) return 0;
  *cookieLen = kCookieLen;
  return 1;
}

int verifyCookie(SSL *ssl, const unsigned char *cookie, unsigned int cookieLen) {
  Pipe *p;
  SharedContext *cs;
  parties(ssl, &p, &cs);
  if (p == nullptr || cs == nullptr) return 0;
  return cookieMatches(cs, p->cookieKey, cookie, cookieLen) ? 1 : 0;
}

bool cookieMatches(SharedContext *cs, const std::vector<uint8_t> &key, const unsigned char *cookie, size_t cookieLen) {
  if (cs == nullptr || cookie == nullptr || cookieLen != kCookieLen) return false;
  uint8_t expect[kCookieLen];
  for (int which = 0; which < (cs->havePrevious ? 2 : 1); which++) {
    if (cookieFor(cs, which, key, expect) && CRYPTO_memcmp(expect, cookie, kCookieLen) == 0) return true;
  }
  return false;
}

}  // namespace seng_dtls
