// The per-SSL I/O state ("pipe") and the custom datagram BIO that connects an SSL object to it:
//   - reads return the one datagram handed to Conn.input() / Context.listen() (borrowed, never
//     copied into a BIO),
//   - writes go straight to the UDP socket with sendto(2), or are collected in `held` while the
//     server holds its final handshake flight back until the asynchronous certificate verdict.
// One BIO_write is one datagram, like OpenSSL's own datagram BIO.
#pragma once

#include <openssl/bio.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common.h"

namespace seng_dtls {

struct Pipe {
  Pipe() { ++gLivePipe; }
  ~Pipe() { --gLivePipe; }
  Pipe(const Pipe &) = delete;
  Pipe &operator=(const Pipe &) = delete;

  // Read side: the datagram of the current input() call.
  const uint8_t *in = nullptr;
  size_t inLen = 0;

  // Write side: our UDP socket (not owned) and the peer.
  int fd = -1;
  sockaddr_storage peer{};
  socklen_t peerLen = 0;
  long mtuOverhead = 28;  // IPv4 + UDP headers
  int lastSendErrno = 0;

  // Server: the final flight, held back until the verdict (datagrams back to back, end offsets).
  bool hold = false;
  std::vector<uint8_t> held;
  std::vector<size_t> heldEnds;

  // The highest record sequence number the SSL object wrote per epoch (0 and 1), learnt from the
  // record headers passing through the BIO: a hand-made epoch-0 alert (reject) and the native
  // record layer (epoch 1) continue after it, so that no sequence number is used twice.
  bool sawSeq[2] = {false, false};
  uint64_t lastSeq[2] = {0, 0};

  // Identity of the peer for the cookie HMAC: family, address bytes, port.
  std::vector<uint8_t> cookieKey;

  // Alerts seen by the info callback: (level << 8) | description, -1 if none.
  int alertRecv = -1;
  int alertSent = -1;

  // The next unused sequence number of our records in `epoch` (0 or 1).
  uint64_t nextSeq(int epoch) const { return sawSeq[epoch] ? lastSeq[epoch] + 1 : 0; }
};

// Sends one datagram to the pipe's peer. Never fails: a datagram the socket does not take (full
// buffer, no socket) is dropped and counted, which DTLS treats like loss.
void emitDatagram(Pipe *p, const uint8_t *d, size_t n);

// Sends the held datagrams and stops holding.
void flushHeld(Pipe *p);

// Our BIO method (created once); its data pointer is a Pipe.
BIO_METHOD *pipeMethod();

}  // namespace seng_dtls
