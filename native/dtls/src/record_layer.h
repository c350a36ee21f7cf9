// The native DTLS 1.2 record layer of an established association (after the handshake, once the
// SSL object is freed): AES-GCM records in epoch 1, as RFC 6347 §4.1 and RFC 5288 define them
// and OpenSSL produces them.
//
//   record   = type(1) || fe fd || epoch(2) || seq(6) || length(2) || explicit nonce(8) || ciphertext || tag(16)
//   nonce    = implicit IV(4) || explicit nonce(8), the explicit nonce being epoch || seq (as OpenSSL does)
//   AAD      = epoch || seq (8) || type || fe fd || plaintext length(2)
//
// Memory: an idle association keeps only its raw keys and implicit IVs (≤ 72 bytes) and, per
// direction, a pre-keyed EVP_CIPHER_CTX (≈ 1.2 KiB with OpenSSL 3.0) only once that direction
// carries traffic. The first kTransientRecords records of a direction are sealed / opened with a
// temporary context that is freed right away; the next one creates the direction's persistent
// context. A gateway's receive association (port P) thus never keeps a seal context (it seals
// only the IpAssignment and alerts), its send association (P+1) no open context (the enclave sends
// nothing there but close_notify): an enclave with traffic holds two contexts instead of four, an
// enclave that stayed idle since its setup none.
// With a persistent context only the nonce changes per record, and a record is one call into the
// cipher: OpenSSL's TLS AEAD mode (the AAD handed as a parameter, then one EVP_Cipher() over
// explicit nonce ‖ text ‖ tag, in place), which skips the per-record parameter lookups of the
// init / update / final / tag sequence (perf: ≈ 10 % of the gateway's CPU with 64-byte packets).
// Sealing lets the context generate the explicit nonce: its invocation counter is set to
// epoch ‖ seq once and counts up with our sequence numbers (checked on every record).
// Received records pass the replay
// window (RFC 6347 §4.1.2.6, 64 records) before decryption and are marked in it only once
// authenticated.
//
// Threads: seal() may run on TunDispatch's thread (the gateway → enclave path) and open() on the
// endpoint's receive thread (recv_thread.h, the enclave → gateway path) while the JavaScript
// thread seals control records or opens a datagram handed to it. Each side has its own mutex,
// uncontended on the hot path: sealLock_ guards the sending side (its lazily created context,
// its use count and the sequence number), openLock_ the receiving side (its context, created
// lazily inside open(), the use count and the replay window).
#pragma once

#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common.h"
#include "record_keys.h"

namespace seng_dtls {

constexpr uint8_t kChangeCipherSpec = 20;
constexpr uint8_t kAlert = 21;
constexpr uint8_t kHandshake = 22;
constexpr uint8_t kApplicationData = 23;

// Sliding window of the 64 highest sequence numbers received (bit i: top - i was seen).
class ReplayWindow {
 public:
  bool fresh(uint64_t seq) const;
  void accept(uint64_t seq);

 private:
  uint64_t top_ = 0;
  uint64_t bits_ = 0;
};

class RecordLayer {
 public:
  static constexpr size_t kExplicitNonce = 8;
  static constexpr size_t kTag = 16;
  // Bytes a record adds to its plaintext.
  static constexpr size_t kOverhead = kRecordHeader + kExplicitNonce + kTag;

  // Records of a direction sealed / opened with a temporary cipher context before the direction
  // gets a persistent one.
  static constexpr uint32_t kTransientRecords = 8;

  // A record layer for epoch 1 whose first record of ours uses sequence number nextWriteSeq (the
  // SSL object's records in epoch 1 came before). nullptr and *error when the cipher is not
  // available. Keeps a copy of the keys; no cipher context is created yet.
  static std::shared_ptr<RecordLayer> create(const RecordKeys &keys, uint64_t nextWriteSeq, std::string *error);
  ~RecordLayer();
  RecordLayer(const RecordLayer &) = delete;
  RecordLayer &operator=(const RecordLayer &) = delete;

  // Where a record's plaintext starts (header and explicit nonce before it).
  static constexpr size_t kPlainOffset = kRecordHeader + kExplicitNonce;

  // Seals `n` plaintext bytes into one record of `type` at `out` (room for n + kOverhead bytes,
  // n ≤ kMaxPlain). The plaintext is moved to out + kPlainOffset first unless it is already there
  // (in == out + kPlainOffset, the cheapest call); `in` may overlap out otherwise too. Returns the
  // record's length, 0 when sequence numbers are exhausted or the cipher failed (the association
  // must end then).
  size_t seal(uint8_t type, const uint8_t *in, size_t n, uint8_t *out);

  enum class Opened { Ok, NotOurs, Replayed, Forged };
  // Opens the record rec[0, len) (header included; len = 13 + the header's length field). NotOurs:
  // another version or epoch, or too short / too long to be one of ours; Replayed: outside or
  // already in the window; Forged: the tag did not verify. On Ok the plaintext is at out (room
  // for len - kOverhead bytes) and *plainLen / *type are set.
  Opened open(const uint8_t *rec, size_t len, uint8_t *out, size_t *plainLen, uint8_t *type);
  // open(), decrypting in place: on Ok the plaintext is at rec + kPlainOffset (*plainLen bytes);
  // otherwise the record's bytes after the header may have been overwritten. One call into the
  // cipher per record (the receive thread's path).
  Opened openInPlace(uint8_t *rec, size_t len, size_t *plainLen, uint8_t *type);

  // The length of the record that starts at d[0, n) when the whole of it is there, else 0.
  static size_t framedLength(const uint8_t *d, size_t n);

  // Whether a direction holds its persistent cipher context (info(), memory tests). The open side
  // is read without a lock: call it where open() may be called (the receiving thread).
  bool hasSealContext();
  bool hasOpenContext() const { return open_.ctx != nullptr; }

 private:
  static constexpr uint64_t kNoSeq = ~uint64_t{0};

  // One direction: its key and implicit IV, and its cipher context once it is worth keeping.
  struct Direction {
    EVP_CIPHER_CTX *ctx = nullptr;
    uint32_t uses = 0;  // records before the persistent context (saturates at kTransientRecords)
    // ctx's TLS-mode state: sealing, the sequence number its nonce counter holds (kNoSeq: not
    // set); opening, whether its fixed IV is set for TLS mode (a streaming open() may reset it).
    uint64_t ctrSeq = kNoSeq;
    bool tlsReady = false;
    uint8_t key[32]{};
    uint8_t iv[4]{};
  };

  struct Private {};  // lets std::make_shared call the constructor (one allocation), nobody else

 public:
  explicit RecordLayer(Private) { ++gLiveRecordLayer; }

 private:
  static constexpr uint16_t kEpoch = 1;
  static bool ourRecord(const uint8_t *rec, size_t len);
  static constexpr uint64_t kMaxSeq = (uint64_t{1} << 48) - 1;

  // The context for the next record of `d`: its persistent one (created on the record after the
  // transient ones), else a temporary one that the caller frees with done(). nullptr on failure.
  EVP_CIPHER_CTX *contextFor(Direction *d, bool encrypt);
  static void done(const Direction &d, EVP_CIPHER_CTX *c) {
    if (c != d.ctx) EVP_CIPHER_CTX_free(c);
  }

  const EVP_CIPHER *cipher_ = nullptr;  // fetched once per process (record_keys.cc)
  size_t keyLen_ = 0;
  std::mutex sealLock_;  // seal_ and nextSeq_
  std::mutex openLock_;  // open_ and window_
  Direction seal_;
  Direction open_;
  uint64_t nextSeq_ = 0;
  ReplayWindow window_;
};

}  // namespace seng_dtls
