// The receive-tunnel fast path (see tun_forward.h).
#include "tun_forward.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <cstring>

namespace seng_dtls {

void TunForwarder::configure(int fd, uint32_t sourceIp, size_t mtu) {
  fd_ = fd < 0 ? -1 : fd;
  sourceNetOrder_ = htonl(sourceIp);
  mtu_ = mtu;
}

bool TunForwarder::offer(const uint8_t *p, size_t n) {
  if (fd_ < 0) return false;
  // Version 4, header length ≥ 20 bytes and within the packet, total length = record length.
  if (n < 20 || n > mtu_ || (p[0] >> 4) != 4 || (p[0] & 0x0f) < 5) return false;
  if (static_cast<size_t>(p[0] & 0x0f) * 4 > n) return false;
  if (((static_cast<size_t>(p[2]) << 8) | p[3]) != n) return false;
  uint32_t src;
  std::memcpy(&src, p + 12, 4);
  if (src != sourceNetOrder_) return false;
  if (write(fd_, p, n) == static_cast<ssize_t>(n)) {
    packets_ += 1;
    bytes_ += static_cast<double>(n);
  } else {
    dropped_ += 1;  // full queue or link down: a lost packet, like on a wire
  }
  return true;
}

}  // namespace seng_dtls
