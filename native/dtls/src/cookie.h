// Stateless DTLS cookies (HelloVerifyRequest): HMAC-SHA256(secret, family || address || port)
// with the current or the previous secret of the SharedContext, compared in constant time.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace seng_dtls {

// SSL_CTX_set_cookie_generate_cb / SSL_CTX_set_cookie_verify_cb callbacks. The SSL's app data is
// its Pipe (the peer's identity), the SSL_CTX's app data its SharedContext (the secrets).
int generateCookie(SSL *ssl, unsigned char *cookie, unsigned int *cookieLen);
int verifyCookie(SSL *ssl, const unsigned char *cookie, unsigned int cookieLen);

struct SharedContext;
// True when `cookie` is the one issued to the peer whose cookie identity is `key` (parseAddress)
// under the current or the previous secret. Used by verifyCookie and by Context::cookieValid (a
// ClientHello that cannot start yet is queued only when its cookie proves its address).
bool cookieMatches(SharedContext *cs, const std::vector<uint8_t> &key, const unsigned char *cookie, size_t cookieLen);

}  // namespace seng_dtls
