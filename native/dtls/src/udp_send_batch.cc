// Batched UDP sends with GSO (see udp_send_batch.h).
#include "udp_send_batch.h"

#include <netinet/udp.h>

#include <cerrno>
#include <cstring>

#include "common.h"

namespace seng_dtls {

namespace {

// Errors that say "not this way" for a GSO message (rather than "no room now").
bool refusesGso(int e) { return e == EIO || e == EINVAL || e == ENOPROTOOPT || e == EOPNOTSUPP || e == EMSGSIZE; }

}  // namespace

UdpSendBatch::UdpSendBatch(int fd, size_t capacity, bool gso)
    : fd_(fd),
      gso_(gso),
      iov_(capacity),
      names_(capacity),
      nameLens_(capacity),
      msgs_(capacity),
      msgFirst_(capacity),
      msgRecords_(capacity),
      controls_(capacity) {}

bool UdpSendBatch::add(const uint8_t *data, size_t len, const sockaddr_storage &peer, socklen_t peerLen) {
  if (count_ >= iov_.size()) return false;
  iov_[count_].iov_base = const_cast<uint8_t *>(data);
  iov_[count_].iov_len = len;
  names_[count_] = peer;
  nameLens_[count_] = peerLen;
  count_++;
  return true;
}

bool UdpSendBatch::samePeer(size_t a, size_t b) const {
  return nameLens_[a] == nameLens_[b] && std::memcmp(&names_[a], &names_[b], nameLens_[a]) == 0;
}

// Records in the GSO run that starts at first: same peer, same length; a shorter record may end it.
size_t UdpSendBatch::runLength(size_t first) const {
  if (!gso_) return 1;
  const size_t seg = iov_[first].iov_len;
  if (seg == 0 || seg > 0xffff) return 1;
  size_t n = 1, bytes = seg;
  while (first + n < count_ && n < kMaxSegs) {
    const size_t i = first + n;
    const size_t len = iov_[i].iov_len;
    if (len == 0 || len > seg || bytes + len > kMaxGsoBytes || !samePeer(first, i)) break;
    bytes += len;
    n++;
    if (len < seg) break;  // the short one is the last segment
  }
  return n;
}

size_t UdpSendBatch::build(size_t first, size_t msg) {
  for (size_t r = first; r < count_; msg++) {
    const size_t n = runLength(r);
    mmsghdr &m = msgs_[msg];
    std::memset(&m, 0, sizeof m);
    m.msg_hdr.msg_name = &names_[r];
    m.msg_hdr.msg_namelen = nameLens_[r];
    m.msg_hdr.msg_iov = &iov_[r];
    m.msg_hdr.msg_iovlen = n;
    if (n > 1) {
      Control &c = controls_[msg];
      std::memset(&c, 0, sizeof c);
      m.msg_hdr.msg_control = c.bytes;
      m.msg_hdr.msg_controllen = sizeof c.bytes;
      cmsghdr *cm = CMSG_FIRSTHDR(&m.msg_hdr);
      cm->cmsg_level = SOL_UDP;
      cm->cmsg_type = UDP_SEGMENT;
      cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      const uint16_t seg = static_cast<uint16_t>(iov_[r].iov_len);
      std::memcpy(CMSG_DATA(cm), &seg, sizeof seg);
    }
    msgFirst_[msg] = static_cast<uint32_t>(r);
    msgRecords_[msg] = static_cast<uint32_t>(n);
    r += n;
  }
  return msg;
}

UdpSendBatch::Result UdpSendBatch::send() {
  Result res;
  size_t msgs = build(0, 0);
  size_t done = 0;
  while (done < msgs) {
    res.syscalls++;
    const int r = sendmmsg(fd_, msgs_.data() + done, static_cast<unsigned>(msgs - done), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r > 0) {
      for (size_t m = done; m < done + static_cast<size_t>(r); m++) {
        res.sent += msgRecords_[m];
        if (msgRecords_[m] > 1) {
          res.gsoMessages++;
          res.gsoRecords += msgRecords_[m];
        }
      }
      done += static_cast<size_t>(r);
      continue;
    }
    const int e = r < 0 ? errno : EAGAIN;
    lastErrno_ = e;
    if (msgRecords_[done] > 1 && refusesGso(e)) {
      // GSO is not possible here: the rest of the batch as single datagrams, and from now on.
      gso_ = false;
      gsoRefused_ += 1;
      msgs = build(msgFirst_[done], done);
      continue;
    }
    // The first message failed (EAGAIN, ENOBUFS, EPERM, ...): drop it and try the rest.
    res.failed += msgRecords_[done];
    done++;
  }
  gDirectSends += res.sent;
  gDroppedSends += res.failed;
  gGsoSends += res.gsoMessages;
  gGsoRecords += res.gsoRecords;
  count_ = 0;
  return res;
}

}  // namespace seng_dtls
