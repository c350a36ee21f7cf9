// The receive-tunnel fast path (see tun_forward.h).
#include "tun_forward.h"

#include <unistd.h>

#include "tun_writer.h"

namespace seng_dtls {

void TunForwarder::configure(int fd, uint32_t sourceIp, size_t mtu, bool dropInvalid, bool vnetHdr) {
  fd_ = fd < 0 ? -1 : fd;
  source_ = sourceIp;
  mtu_ = mtu;
  dropInvalid_ = dropInvalid;
  vnetHdr_ = vnetHdr;
}

TunForwarder::Verdict TunForwarder::classify(const uint8_t *p, size_t n) const {
  if (n > mtu_) return Verdict::Oversize;
  if (n < 20) return Verdict::Malformed;
  const size_t ihlBytes = static_cast<size_t>(p[0] & 0x0f) * 4;
  if ((p[0] >> 4) != 4 || ihlBytes < 20 || ihlBytes > n) return Verdict::Malformed;
  if (((static_cast<size_t>(p[2]) << 8) | p[3]) != n) return Verdict::Malformed;
  return checked(p) == source_ ? Verdict::Ok : Verdict::Spoofed;
}

void TunForwarder::resetCounters() {
  packets = bytes = dropped = oversize = malformed = spoofed = 0;
  lastSpoofedSource = 0;
}

bool TunForwarder::offer(const uint8_t *p, size_t n, TunWriter *writer) {
  if (fd_ < 0) return false;
  switch (classify(p, n)) {
    case Verdict::Ok:
      if (vnetHdr_) {
        (writer != nullptr ? writer : TunWriter::forFd(fd_))->add(p, n);  // written at the batch's end
        packets += 1;
        bytes += static_cast<double>(n);
      } else if (write(fd_, p, n) == static_cast<ssize_t>(n)) {
        packets += 1;
        bytes += static_cast<double>(n);
      } else {
        dropped += 1;  // full queue or link down: a lost packet, like on a wire
      }
      return true;
    case Verdict::Oversize:
      if (!dropInvalid_) return false;
      oversize += 1;
      return true;
    case Verdict::Malformed:
      if (!dropInvalid_) return false;
      malformed += 1;
      return true;
    case Verdict::Spoofed:
      if (!dropInvalid_) return false;
      spoofed += 1;
      lastSpoofedSource = checked(p);
      return true;
  }
  return false;
}

}  // namespace seng_dtls
