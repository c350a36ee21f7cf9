// The gateway's receive-tunnel fast path: decrypted records that are valid IPv4 packets from the
// enclave's own address are written to the TUN device here, without a trip through JavaScript.
// The rule is the gateway's (src/tunnel/packet.ts, classifyEnclavePacket), checked in its order:
//   oversize   record length > MTU
//   malformed  length < 20, version ≠ 4, IHL < 5, IHL × 4 > length, total length ≠ record length
//   spoofed    source ≠ the enclave IP
// The client role (the enclave simulator's send tunnel, checkDestination) checks the destination
// instead: the gateway forwards packets from any address, but only to the enclave IP.
// Invalid records are left to JavaScript, or, with dropInvalid, dropped here and counted by reason.
// On a device with a virtio_net_hdr (vnetHdr: opened with offload) valid packets go through the
// fd's TunWriter (tun_writer.h), which coalesces a receive batch's TCP segments into GSO writes;
// `packets`/`bytes` then count packets handed to it and its own counters count the writes.
//
// Threads: a Conn's forwarder is used on the JavaScript thread; the receive thread
// (recv_thread.h) uses its own copy per routed session (same settings, own counters, under its
// table lock) and passes its own writer to offer().
#pragma once

#include <cstddef>
#include <cstdint>

namespace seng_dtls {

class TunWriter;

class TunForwarder {
 public:
  enum class Verdict { Ok, Oversize, Malformed, Spoofed };

  // fd < 0 turns forwarding off. sourceIp is the enclave IP in host order.
  void configure(int fd, uint32_t sourceIp, size_t mtu, bool dropInvalid, bool vnetHdr);
  bool enabled() const { return fd_ >= 0; }
  // Client role: compare the destination, not the source, with the configured address (the
  // mismatches count as `spoofed`, the address in lastSpoofedSource).
  void checkDestination(bool on) { checkDestination_ = on; }
  int fd() const { return fd_; }
  bool vnetHdr() const { return vnetHdr_; }
  // Zeroes the counters (a copy for the receive thread starts its own).
  void resetCounters();

  Verdict classify(const uint8_t *packet, size_t length) const;

  // Takes the record when forwarding is on and it is a valid packet (written to the device; a full
  // device queue counts as `dropped`) or, with dropInvalid, an invalid one (counted by reason).
  // Returns false, touching nothing, when the record is left to JavaScript. With vnetHdr, valid
  // packets go to `writer` (the caller's own) or, when null, to the fd's JavaScript-thread writer.
  bool offer(const uint8_t *packet, size_t length, TunWriter *writer = nullptr);

  double packets = 0, bytes = 0, dropped = 0;
  double oversize = 0, malformed = 0, spoofed = 0;
  uint32_t lastSpoofedSource = 0;  // host order, for the gateway's log line

 private:
  int fd_ = -1;
  uint32_t source_ = 0;  // host order
  size_t mtu_ = 0;
  bool dropInvalid_ = false;
  bool vnetHdr_ = false;
  bool checkDestination_ = false;

  // The address the rule compares (host order): source, or destination with checkDestination_.
  uint32_t checked(const uint8_t *p) const {
    const uint8_t *a = p + (checkDestination_ ? 16 : 12);
    return (static_cast<uint32_t>(a[0]) << 24) | (static_cast<uint32_t>(a[1]) << 16) |
           (static_cast<uint32_t>(a[2]) << 8) | a[3];
  }
};

}  // namespace seng_dtls
