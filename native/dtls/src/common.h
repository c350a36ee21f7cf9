// Declarations shared by the files of the seng DTLS addon: counters of live native objects (leak
// tests) and of datagram sends, protocol constants, the flags returned to JavaScript, and the
// helpers that turn OpenSSL errors into JavaScript exceptions.
#pragma once

#include <napi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace seng_dtls {

extern std::atomic<int64_t> gLiveSsl;       // SSL objects
extern std::atomic<int64_t> gLiveCtx;       // SSL_CTX objects (shared context state)
extern std::atomic<int64_t> gLiveConn;      // Conn wrappers
extern std::atomic<int64_t> gLivePipe;      // BIO states
extern std::atomic<int64_t> gLiveEndpoint;  // open UDP sockets of Endpoint objects
extern std::atomic<int64_t> gLiveRecordLayer;  // native record layers (two keyed cipher contexts each)
extern std::atomic<int64_t> gLiveDispatch;     // TunDispatch objects
extern std::atomic<uint64_t> gDirectSends;  // datagrams sent with sendto(2)
extern std::atomic<uint64_t> gDroppedSends; // datagrams the socket refused (full buffer, EPERM, ...)
extern std::atomic<uint64_t> gGsoSends;     // UDP GSO messages sent (two or more records each)
extern std::atomic<uint64_t> gGsoRecords;   // records in those messages
extern std::atomic<uint64_t> gGroReads;     // UDP GRO reads that held two or more datagrams
extern std::atomic<uint64_t> gGroDatagrams; // datagrams in those reads
extern std::atomic<uint64_t> gGroMalformed; // UDP GRO reads dropped: a gso_size the split refused

constexpr size_t kRecordHeader = 13;  // DTLS record header: type, version(2), epoch(2), seq(6), length(2)
constexpr size_t kMaxPlain = 16384;   // SSL3_RT_MAX_PLAIN_LENGTH

// Flags returned to JavaScript (keep in sync with src/dtls/native.ts). Bit 0 is unused (it once
// meant "datagrams queued in memory"; every datagram now goes straight to the socket).
enum : uint32_t {
  F_HANDSHAKE_DONE = 2,  // handshake finished during this call
  F_PEER_CLOSED = 4,     // close_notify received (ours was sent in reply)
  F_FATAL = 8,           // fatal error or fatal alert: connection is dead
  F_MORE = 16,           // slab or lens full: call input(null, ...) again with fresh space
  F_CLOSED = 32,         // connection was already closed / freed
};

// OpenSSL's queued errors as one line (and clears the queue).
std::string drainErrors();

[[noreturn]] void throwCode(Napi::Env env, const char *code, const std::string &message);

// throwCode with OpenSSL's queued errors appended to `what`.
[[noreturn]] void throwSsl(Napi::Env env, const char *code, const std::string &what);

// nativeStats(): the counters above as a JavaScript object.
Napi::Value NativeStats(const Napi::CallbackInfo &info);

}  // namespace seng_dtls
