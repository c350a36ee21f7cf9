// The datagram BIO (see pipe.h).
#include "pipe.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <mutex>

namespace seng_dtls {

namespace {

constexpr size_t kMaxHeldBytes = 1u << 20;  // a final flight is a few KiB; beyond this it is loss

// Remembers the highest sequence number per epoch (0, 1) of the records in an outgoing datagram
// (a datagram may carry several records; a truncated header ends the walk).
void noteSequenceNumbers(Pipe *p, const uint8_t *d, size_t n) {
  size_t off = 0;
  while (n - off >= kRecordHeader) {
    const uint8_t *h = d + off;
    const unsigned epoch = (static_cast<unsigned>(h[3]) << 8) | h[4];
    uint64_t seq = 0;
    for (size_t i = 5; i < 11; i++) seq = (seq << 8) | h[i];
    if (epoch <= 1 && (!p->sawSeq[epoch] || seq > p->lastSeq[epoch])) {
      p->lastSeq[epoch] = seq;
      p->sawSeq[epoch] = true;
    }
    const size_t len = (static_cast<size_t>(h[11]) << 8) | h[12];
    if (len > n - off - kRecordHeader) break;
    off += kRecordHeader + len;
  }
}

int pipeWrite(BIO *b, const char *data, int len) {
  BIO_clear_retry_flags(b);
  auto *p = static_cast<Pipe *>(BIO_get_data(b));
  if (p == nullptr || data == nullptr || len < 0) return -1;
  const auto *d = reinterpret_cast<const uint8_t *>(data);
  const auto n = static_cast<size_t>(len);
  noteSequenceNumbers(p, d, n);
  if (p->hold) {
    if (p->held.size() + n <= kMaxHeldBytes) {
      p->held.insert(p->held.end(), d, d + n);
      p->heldEnds.push_back(p->held.size());
    }
    return len;
  }
  emitDatagram(p, d, n);
  return len;
}

int pipeRead(BIO *b, char *buf, int len) {
  BIO_clear_retry_flags(b);
  auto *p = static_cast<Pipe *>(BIO_get_data(b));
  if (p == nullptr || p->in == nullptr || buf == nullptr || len <= 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  size_t n = p->inLen < static_cast<size_t>(len) ? p->inLen : static_cast<size_t>(len);
  std::memcpy(buf, p->in, n);
  // A datagram is read once, whole (a truncated one is garbage to DTLS and gets dropped there).
  p->in = nullptr;
  p->inLen = 0;
  return static_cast<int>(n);
}

long pipeCtrl(BIO *b, int cmd, long /*num*/, void * /*ptr*/) {
  auto *p = static_cast<Pipe *>(BIO_get_data(b));
  const long overhead = p != nullptr ? p->mtuOverhead : 28;
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_DGRAM_GET_MTU_OVERHEAD:
      return overhead;
    case BIO_CTRL_DGRAM_SET_NEXT_TIMEOUT:
    case BIO_CTRL_DGRAM_SET_PEER:
    case BIO_CTRL_DGRAM_SET_CONNECTED:
      return 1;
    case BIO_CTRL_DGRAM_GET_FALLBACK_MTU:
      return 1500 - overhead;
    default:
      // QUERY_MTU, MTU_EXCEEDED, GET_PEER, PENDING, WPENDING, ...: not supported / nothing pending.
      return 0;
  }
}

int pipeCreate(BIO *b) {
  BIO_set_init(b, 1);
  BIO_set_data(b, nullptr);
  return 1;
}

int pipeDestroy(BIO *b) {
  if (b == nullptr) return 0;
  BIO_set_data(b, nullptr);
  BIO_set_init(b, 0);
  return 1;
}

BIO_METHOD *gMethod = nullptr;
std::once_flag gMethodOnce;

}  // namespace

void emitDatagram(Pipe *p, const uint8_t *d, size_t n) {
  if (p->fd < 0) {
    p->lastSendErrno = EBADF;
    ++gDroppedSends;
    return;
  }
  // A full socket buffer (EAGAIN / ENOBUFS) is congestion: the datagram is lost, as it would be a
  // hop later; DTLS retransmits handshake flights and the tunnelled protocols recover.
  ssize_t r;
  do {
    r = sendto(p->fd, d, n, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<const sockaddr *>(&p->peer), p->peerLen);
  } while (r < 0 && errno == EINTR);
  if (r == static_cast<ssize_t>(n)) {
    ++gDirectSends;
    return;
  }
  p->lastSendErrno = r < 0 ? errno : EMSGSIZE;
  ++gDroppedSends;
}

void flushHeld(Pipe *p) {
  p->hold = false;
  size_t start = 0;
  for (size_t end : p->heldEnds) {
    emitDatagram(p, p->held.data() + start, end - start);
    start = end;
  }
  p->held.clear();
  p->heldEnds.clear();
}

BIO_METHOD *pipeMethod() {
  std::call_once(gMethodOnce, [] {
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "seng-dtls-datagram");
    if (m == nullptr) return;
    BIO_meth_set_write(m, pipeWrite);
    BIO_meth_set_read(m, pipeRead);
    BIO_meth_set_ctrl(m, pipeCtrl);
    BIO_meth_set_create(m, pipeCreate);
    BIO_meth_set_destroy(m, pipeDestroy);
    gMethod = m;
  });
  return gMethod;
}

}  // namespace seng_dtls
