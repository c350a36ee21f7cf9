// Key derivation for the native record layer (see record_keys.h).
#include "record_keys.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/obj_mac.h>
#include <openssl/params.h>

#include <cstring>

namespace seng_dtls {

namespace {

constexpr size_t kRandom = SSL3_RANDOM_SIZE;  // 32
constexpr size_t kImplicitIv = 4;             // RFC 5288: the salt of the GCM nonce
constexpr char kLabel[] = "key expansion";

// The TLS 1.2 PRF with `digest`: out = PRF(secret, label, seed).
bool tls12Prf(const char *digest, const uint8_t *secret, size_t secretLen, const uint8_t *seed, size_t seedLen,
              uint8_t *out, size_t outLen) {
  EVP_KDF *kdf = EVP_KDF_fetch(nullptr, "TLS1-PRF", nullptr);
  if (kdf == nullptr) return false;
  EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (kctx == nullptr) return false;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char *>(digest), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, const_cast<uint8_t *>(secret), secretLen),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, const_cast<uint8_t *>(seed), seedLen),
      OSSL_PARAM_construct_end(),
  };
  const bool ok = EVP_KDF_derive(kctx, out, outLen, params) == 1;
  EVP_KDF_CTX_free(kctx);
  return ok;
}

// The AES-GCM cipher by name, fetched once per process: a context initialised with a fetched cipher
// skips the implicit fetch that a legacy EVP_aes_*_gcm() pointer costs on every EVP_CipherInit_ex
// (temporary contexts, record_layer.h). Kept for the life of the process; nullptr if unavailable.
const EVP_CIPHER *fetchedGcm(size_t keyLen) {
  static EVP_CIPHER *const aes128 = EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr);
  static EVP_CIPHER *const aes256 = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return keyLen == 16 ? aes128 : aes256;
}

}  // namespace

RecordKeys::~RecordKeys() {
  OPENSSL_cleanse(writeKey, sizeof writeKey);
  OPENSSL_cleanse(readKey, sizeof readKey);
  OPENSSL_cleanse(writeIv, sizeof writeIv);
  OPENSSL_cleanse(readIv, sizeof readIv);
}

bool deriveRecordKeys(SSL *ssl, bool server, RecordKeys *keys, std::string *error) {
  const SSL_CIPHER *suite = SSL_get_current_cipher(ssl);
  SSL_SESSION *session = SSL_get_session(ssl);
  if (suite == nullptr || session == nullptr) {
    *error = "no negotiated cipher suite";
    return false;
  }
  switch (SSL_CIPHER_get_cipher_nid(suite)) {
    case NID_aes_128_gcm:
      keys->keyLen = 16;
      break;
    case NID_aes_256_gcm:
      keys->keyLen = 32;
      break;
    default:
      *error = std::string("the native record layer supports AES-GCM suites only, not ") + SSL_CIPHER_get_name(suite);
      return false;
  }
  keys->cipher = fetchedGcm(keys->keyLen);
  if (keys->cipher == nullptr) {
    *error = "AES-GCM is not available";
    return false;
  }
  const EVP_MD *md = SSL_CIPHER_get_handshake_digest(suite);  // the PRF hash: SHA256 or SHA384
  if (md == nullptr) {
    *error = "no PRF digest for the suite";
    return false;
  }
  uint8_t master[SSL_MAX_MASTER_KEY_LENGTH];
  const size_t masterLen = SSL_SESSION_get_master_key(session, master, sizeof master);
  // seed = "key expansion" || server_random || client_random
  uint8_t seed[sizeof kLabel - 1 + 2 * kRandom];
  std::memcpy(seed, kLabel, sizeof kLabel - 1);
  const bool haveRandoms = SSL_get_server_random(ssl, seed + sizeof kLabel - 1, kRandom) == kRandom &&
                           SSL_get_client_random(ssl, seed + sizeof kLabel - 1 + kRandom, kRandom) == kRandom;
  // key block = client_write_key || server_write_key || client_write_IV || server_write_IV
  // (AEAD suites have no MAC keys).
  uint8_t block[2 * 32 + 2 * kImplicitIv];
  const size_t k = keys->keyLen;
  const size_t blockLen = 2 * k + 2 * kImplicitIv;
  const bool ok = masterLen > 0 && haveRandoms &&
                  tls12Prf(EVP_MD_get0_name(md), master, masterLen, seed, sizeof seed, block, blockLen);
  OPENSSL_cleanse(master, sizeof master);
  if (!ok) {
    OPENSSL_cleanse(block, sizeof block);
    *error = "key derivation failed";
    return false;
  }
  const uint8_t *clientKey = block;
  const uint8_t *serverKey = block + k;
  const uint8_t *clientIv = block + 2 * k;
  const uint8_t *serverIv = block + 2 * k + kImplicitIv;
  std::memcpy(keys->writeKey, server ? serverKey : clientKey, k);
  std::memcpy(keys->readKey, server ? clientKey : serverKey, k);
  std::memcpy(keys->writeIv, server ? serverIv : clientIv, kImplicitIv);
  std::memcpy(keys->readIv, server ? clientIv : serverIv, kImplicitIv);
  OPENSSL_cleanse(block, sizeof block);
  return true;
}

}  // namespace seng_dtls
