// The AES-GCM keys and implicit IVs of an established DTLS 1.2 association, derived from its SSL
// object with the TLS 1.2 PRF (RFC 5246 §6.3) so that the SSL object can be freed and the native
// record layer (record_layer.h) carry on.
#pragma once

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace seng_dtls {

struct RecordKeys {
  const EVP_CIPHER *cipher = nullptr;  // AES-128-GCM or AES-256-GCM, fetched once per process
  size_t keyLen = 0;                   // 16 or 32
  uint8_t writeKey[32]{};              // ours
  uint8_t readKey[32]{};               // the peer's
  uint8_t writeIv[4]{};                // implicit (salt) part of our nonces
  uint8_t readIv[4]{};

  RecordKeys() = default;
  RecordKeys(const RecordKeys &) = delete;
  RecordKeys &operator=(const RecordKeys &) = delete;
  ~RecordKeys();
};

// Fills *keys for our side (server: writes with the server_write key) from a completed handshake.
// Only the two AES-GCM suites of SPEC §1.1 (and any other AES-GCM suite) are supported; false and
// *error otherwise.
bool deriveRecordKeys(SSL *ssl, bool server, RecordKeys *keys, std::string *error);

}  // namespace seng_dtls
