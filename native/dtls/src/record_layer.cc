// The native DTLS 1.2 record layer (see record_layer.h).
#include "record_layer.h"

#include <openssl/core_names.h>
#include <openssl/params.h>

#include <cstring>

namespace seng_dtls {

namespace {

constexpr uint8_t kVersionMajor = 0xfe;  // DTLS 1.2 = { 254, 253 }
constexpr uint8_t kVersionMinor = 0xfd;

void putUint48(uint8_t *p, uint64_t v) {
  for (int i = 5; i >= 0; i--, v >>= 8) p[i] = static_cast<uint8_t>(v);
}

uint64_t getUint48(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 6; i++) v = (v << 8) | p[i];
  return v;
}

// AAD = epoch || seq (the 8 bytes at header + 3) || type || version || plaintext length.
void makeAad(uint8_t aad[13], const uint8_t *header, size_t plainLen) {
  std::memcpy(aad, header + 3, 8);
  aad[8] = header[0];
  aad[9] = header[1];
  aad[10] = header[2];
  aad[11] = static_cast<uint8_t>(plainLen >> 8);
  aad[12] = static_cast<uint8_t>(plainLen);
}

// One octet-string parameter of a cipher context (TLS AEAD mode: the AAD, the fixed IV).
bool setOctets(EVP_CIPHER_CTX *c, const char *name, void *data, size_t len) {
  OSSL_PARAM p[2] = {OSSL_PARAM_construct_octet_string(name, data, len), OSSL_PARAM_construct_end()};
  return EVP_CIPHER_CTX_set_params(c, p) == 1;
}

EVP_CIPHER_CTX *keyedContext(const EVP_CIPHER *cipher, const uint8_t *key, bool encrypt) {
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  if (c == nullptr) return nullptr;
  // The IV length stays at GCM's default of 12 bytes; each record sets its own nonce.
  if (EVP_CipherInit_ex(c, cipher, nullptr, key, nullptr, encrypt ? 1 : 0) != 1) {
    EVP_CIPHER_CTX_free(c);
    return nullptr;
  }
  return c;
}

}  // namespace

bool ReplayWindow::fresh(uint64_t seq) const {
  if (bits_ == 0 || seq > top_) return true;
  const uint64_t age = top_ - seq;
  return age < 64 && ((bits_ >> age) & 1) == 0;
}

void ReplayWindow::accept(uint64_t seq) {
  if (bits_ == 0) {
    top_ = seq;
    bits_ = 1;
  } else if (seq > top_) {
    const uint64_t shift = seq - top_;
    bits_ = shift >= 64 ? 1 : (bits_ << shift) | 1;
    top_ = seq;
  } else {
    bits_ |= uint64_t{1} << (top_ - seq);  // fresh() checked top_ - seq < 64
  }
}

std::shared_ptr<RecordLayer> RecordLayer::create(const RecordKeys &keys, uint64_t nextWriteSeq, std::string *error) {
  if (keys.cipher == nullptr || keys.keyLen == 0 || keys.keyLen > sizeof keys.writeKey) {
    *error = "no record cipher";
    return nullptr;
  }
  auto rl = std::make_shared<RecordLayer>(Private{});
  rl->cipher_ = keys.cipher;
  rl->keyLen_ = keys.keyLen;
  std::memcpy(rl->seal_.key, keys.writeKey, keys.keyLen);
  std::memcpy(rl->open_.key, keys.readKey, keys.keyLen);
  std::memcpy(rl->seal_.iv, keys.writeIv, sizeof rl->seal_.iv);
  std::memcpy(rl->open_.iv, keys.readIv, sizeof rl->open_.iv);
  rl->nextSeq_ = nextWriteSeq;
  return rl;
}

RecordLayer::~RecordLayer() {
  for (Direction *d : {&seal_, &open_}) {
    EVP_CIPHER_CTX_free(d->ctx);  // frees and cleanses the key schedule
    OPENSSL_cleanse(d->key, sizeof d->key);
    OPENSSL_cleanse(d->iv, sizeof d->iv);
  }
  --gLiveRecordLayer;
}

EVP_CIPHER_CTX *RecordLayer::contextFor(Direction *d, bool encrypt) {
  if (d->ctx != nullptr) return d->ctx;
  EVP_CIPHER_CTX *c = keyedContext(cipher_, d->key, encrypt);
  if (c == nullptr) return nullptr;
  if (d->uses < kTransientRecords) {
    d->uses++;
    return c;  // temporary: done() frees it
  }
  d->ctx = c;
  return c;
}

bool RecordLayer::hasSealContext() {
  std::lock_guard<std::mutex> guard(sealLock_);
  return seal_.ctx != nullptr;
}

size_t RecordLayer::framedLength(const uint8_t *d, size_t n) {
  if (n < kRecordHeader) return 0;
  const size_t len = kRecordHeader + ((static_cast<size_t>(d[11]) << 8) | d[12]);
  return len <= n ? len : 0;
}

size_t RecordLayer::seal(uint8_t type, const uint8_t *in, size_t n, uint8_t *out) {
  std::lock_guard<std::mutex> guard(sealLock_);
  if (nextSeq_ > kMaxSeq || n > kMaxPlain) return 0;
  const uint64_t seq = nextSeq_++;
  const size_t bodyLen = kExplicitNonce + n + kTag;
  uint8_t *h = out;
  h[0] = type;
  h[1] = kVersionMajor;
  h[2] = kVersionMinor;
  h[3] = static_cast<uint8_t>(kEpoch >> 8);
  h[4] = static_cast<uint8_t>(kEpoch);
  putUint48(h + 5, seq);
  h[11] = static_cast<uint8_t>(bodyLen >> 8);
  h[12] = static_cast<uint8_t>(bodyLen);
  uint8_t *body = out + kRecordHeader;  // explicit nonce || text || tag, sealed in place
  if (in != out + kPlainOffset) std::memmove(out + kPlainOffset, in, n);
  // TLS mode: the AAD's length field counts the explicit nonce too (OpenSSL subtracts it).
  uint8_t aad[13];
  makeAad(aad, h, kExplicitNonce + n);
  EVP_CIPHER_CTX *c = contextFor(&seal_, true);
  if (c == nullptr) return 0;
  // The context's nonce counter (implicit IV || epoch || seq) counts up by one per record; set it
  // when it does not hold this record's sequence number (a new context, or after a failure).
  const bool persistent = c == seal_.ctx;
  bool ok = true;
  if (!persistent || seal_.ctrSeq != seq) {
    uint8_t nonce[12];
    std::memcpy(nonce, seal_.iv, 4);
    std::memcpy(nonce + 4, h + 3, kExplicitNonce);  // epoch || seq
    ok = setOctets(c, OSSL_CIPHER_PARAM_AEAD_TLS1_IV_FIXED, nonce, static_cast<size_t>(-1));  // the whole IV
  }
  ok = ok && setOctets(c, OSSL_CIPHER_PARAM_AEAD_TLS1_AAD, aad, sizeof aad) &&
       EVP_Cipher(c, body, body, static_cast<unsigned>(bodyLen)) >= 0 &&  // -1 on failure
       std::memcmp(body, h + 3, kExplicitNonce) == 0;  // the nonce it used is epoch || seq
  if (persistent) seal_.ctrSeq = ok ? seq + 1 : kNoSeq;
  done(seal_, c);
  return ok ? kRecordHeader + bodyLen : 0;
}

// A record both open paths may try: its size fits a sealed packet, DTLS 1.2, this epoch.
bool RecordLayer::ourRecord(const uint8_t *rec, size_t len) {
  if (len < kOverhead || len - kOverhead > kMaxPlain) return false;
  if (rec[1] != kVersionMajor || rec[2] != kVersionMinor) return false;
  return ((static_cast<unsigned>(rec[3]) << 8) | rec[4]) == kEpoch;
}

RecordLayer::Opened RecordLayer::open(const uint8_t *rec, size_t len, uint8_t *out, size_t *plainLen, uint8_t *type) {
  if (!ourRecord(rec, len)) return Opened::NotOurs;
  std::lock_guard<std::mutex> guard(openLock_);
  const uint64_t seq = getUint48(rec + 5);
  if (!window_.fresh(seq)) return Opened::Replayed;
  const size_t n = len - kOverhead;
  const uint8_t *explicitNonce = rec + kRecordHeader;
  const uint8_t *ct = explicitNonce + kExplicitNonce;
  uint8_t nonce[12];
  std::memcpy(nonce, open_.iv, 4);
  std::memcpy(nonce + 4, explicitNonce, kExplicitNonce);
  uint8_t aad[13];
  makeAad(aad, rec, n);
  uint8_t tag[kTag];
  std::memcpy(tag, ct + n, kTag);  // SET_TAG takes a non-const pointer
  EVP_CIPHER_CTX *c = contextFor(&open_, false);
  if (c == open_.ctx) open_.tlsReady = false;  // the streaming init below replaces TLS mode's IV state
  int outl = 0;
  int finl = 0;
  const bool ok = c != nullptr && EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, nonce) == 1 &&
                  EVP_DecryptUpdate(c, nullptr, &outl, aad, sizeof aad) == 1 &&
                  EVP_DecryptUpdate(c, out, &outl, ct, static_cast<int>(n)) == 1 &&
                  EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, kTag, tag) == 1 &&
                  EVP_DecryptFinal_ex(c, out + outl, &finl) == 1;
  if (c != nullptr) done(open_, c);
  if (!ok) {
    OPENSSL_cleanse(out, n);  // never leave unauthenticated plaintext behind
    return Opened::Forged;
  }
  window_.accept(seq);
  *plainLen = n;
  *type = rec[0];
  return Opened::Ok;
}

RecordLayer::Opened RecordLayer::openInPlace(uint8_t *rec, size_t len, size_t *plainLen, uint8_t *type) {
  if (!ourRecord(rec, len)) return Opened::NotOurs;
  std::lock_guard<std::mutex> guard(openLock_);
  const uint64_t seq = getUint48(rec + 5);
  if (!window_.fresh(seq)) return Opened::Replayed;
  const size_t n = len - kOverhead;
  const size_t bodyLen = len - kRecordHeader;
  uint8_t *body = rec + kRecordHeader;
  // TLS mode: the AAD's length field is the whole body (OpenSSL subtracts nonce and tag); the
  // nonce is the fixed IV || the record's explicit nonce, taken by the cipher from the body.
  uint8_t aad[13];
  makeAad(aad, rec, bodyLen);
  EVP_CIPHER_CTX *c = contextFor(&open_, false);
  const bool persistent = c != nullptr && c == open_.ctx;
  bool ok = c != nullptr;
  if (ok && (!persistent || !open_.tlsReady))
    ok = setOctets(c, OSSL_CIPHER_PARAM_AEAD_TLS1_IV_FIXED, open_.iv, sizeof open_.iv);
  if (persistent) open_.tlsReady = ok;
  ok = ok && setOctets(c, OSSL_CIPHER_PARAM_AEAD_TLS1_AAD, aad, sizeof aad) &&
       EVP_Cipher(c, body, body, static_cast<unsigned>(bodyLen)) >= 0;  // -1 on failure (bad tag)
  if (c != nullptr) done(open_, c);
  if (!ok) {
    OPENSSL_cleanse(rec + kPlainOffset, n);  // never leave unauthenticated plaintext behind
    return Opened::Forged;
  }
  window_.accept(seq);
  *plainLen = n;
  *type = rec[0];
  return Opened::Ok;
}

}  // namespace seng_dtls
