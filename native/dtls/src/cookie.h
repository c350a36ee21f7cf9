// Stateless DTLS cookies (HelloVerifyRequest): HMAC-SHA256(secret, family || address || port)
// with the current or the previous secret of the SharedContext, compared in constant time.
#pragma once

#include <openssl/ssl.h>

namespace seng_dtls {

// SSL_CTX_set_cookie_generate_cb / SSL_CTX_set_cookie_verify_cb callbacks. The SSL's app data is
// its Pipe (the peer's identity), the SSL_CTX's app data its SharedContext (the secrets).
int generateCookie(SSL *ssl, unsigned char *cookie, unsigned int *cookieLen);
int verifyCookie(SSL *ssl, const unsigned char *cookie, unsigned int cookieLen);

}  // namespace seng_dtls
