// UdpSendBatch: sends one batch of sealed DTLS records, each to its peer, with as few system calls
// and as few passes through the network stack as possible:
//
//   - consecutive records to the same peer with the same length (the last of such a run may be
//     shorter) leave as one message with a UDP_SEGMENT control message (UDP GSO): the kernel (or
//     the NIC) cuts it back into exactly these datagrams, so the wire is unchanged (SPEC §1: one
//     record per datagram) while the stack is traversed once per run instead of once per record;
//   - every message of the batch (runs and single records, in batch order, so a peer's records
//     keep their order) leaves with one sendmmsg(2).
//
// Fallbacks: when the kernel refuses a GSO message (EIO: the route's device cannot offload
// checksums; EINVAL: e.g. a segment longer than the path MTU; ENOPROTOOPT/EOPNOTSUPP: a kernel
// without UDP GSO), that run and everything after it is sent again as single datagrams and GSO
// stays off for this sender (counted in gsoRefused). A full socket buffer (EAGAIN, ENOBUFS) drops
// the message it refused — a whole run with GSO — as loss, like a full queue on a wire.
//
// Records are borrowed: their bytes must stay valid until send() returns. One thread only.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace seng_dtls {

class UdpSendBatch {
 public:
  // Segments per GSO message: UDP_MAX_SEGMENTS of kernels before 6.10 (later ones allow 128).
  static constexpr unsigned kMaxSegs = 64;
  // Bytes per GSO message: one UDP payload of at most 65535 - 20 (IPv4) - 8 (UDP) bytes.
  static constexpr size_t kMaxGsoBytes = 65507;

  struct Result {
    unsigned sent = 0;         // records the kernel took
    unsigned failed = 0;       // records dropped (full buffer, errors)
    unsigned gsoMessages = 0;  // messages carrying two or more records
    unsigned gsoRecords = 0;   // records in those messages
    unsigned syscalls = 0;     // sendmmsg(2) calls
  };

  // capacity: records per batch; gso: try UDP_SEGMENT (off: sendmmsg of single datagrams).
  UdpSendBatch(int fd, size_t capacity, bool gso);

  size_t size() const { return count_; }
  bool gso() const { return gso_; }
  double gsoRefused() const { return gsoRefused_; }
  int lastErrno() const { return lastErrno_; }

  // Queues a record for peer (false when the batch is full: send() first).
  bool add(const uint8_t *data, size_t len, const sockaddr_storage &peer, socklen_t peerLen);
  // Sends the queued records and empties the batch.
  Result send();

 private:
  union Control {
    cmsghdr align;
    char bytes[CMSG_SPACE(sizeof(uint16_t))];
  };

  const int fd_;
  bool gso_;
  double gsoRefused_ = 0;
  int lastErrno_ = 0;
  size_t count_ = 0;
  std::vector<iovec> iov_;                // one per record
  std::vector<sockaddr_storage> names_;   // one per record
  std::vector<socklen_t> nameLens_;       // one per record
  std::vector<mmsghdr> msgs_;             // one per message
  std::vector<uint32_t> msgFirst_;        // first record of each message
  std::vector<uint32_t> msgRecords_;      // records in each message
  std::vector<Control> controls_;         // UDP_SEGMENT of each GSO message

  bool samePeer(size_t a, size_t b) const;
  size_t runLength(size_t first) const;
  // Builds the messages for records [first, count_) from message index msg on; returns the end.
  size_t build(size_t first, size_t msg);
};

}  // namespace seng_dtls
