// The gateway's receive-tunnel fast path: decrypted records that are valid IPv4 packets from the
// enclave's own address are written to the TUN device here, without a trip through JavaScript.
// Everything else is left to JavaScript (which applies the same rule and counts the drops).
#pragma once

#include <cstddef>
#include <cstdint>

namespace seng_dtls {

class TunForwarder {
 public:
  // fd < 0 turns forwarding off. sourceIp is the enclave IP in host order.
  void configure(int fd, uint32_t sourceIp, size_t mtu);
  bool enabled() const { return fd_ >= 0; }

  // Writes the packet to the device when it is a valid IPv4 packet from the enclave IP of at most
  // mtu bytes (a full device queue counts as a drop); returns false, touching nothing, otherwise.
  bool offer(const uint8_t *packet, size_t length);

  double packets() const { return packets_; }
  double bytes() const { return bytes_; }
  double dropped() const { return dropped_; }

 private:
  int fd_ = -1;
  uint32_t sourceNetOrder_ = 0;
  size_t mtu_ = 0;
  double packets_ = 0, bytes_ = 0, dropped_ = 0;
};

}  // namespace seng_dtls
