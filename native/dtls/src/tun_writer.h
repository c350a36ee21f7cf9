// TunWriter: the enclave → device write side for a TUN fd opened with IFF_VNET_HDR (offload on).
// Valid packets from the receive sessions' TUN forwarders (tun_forward.h) are copied into the
// writer of their fd; at the end of one receive batch (one recvmmsg(2) wakeup of the UDP endpoint)
// the writer coalesces consecutive TCP segments of one flow into GSO super-packets (seng_gro_*,
// native/common/seng_net.h) and writes every frame with its virtio_net_hdr: fewer, larger writes
// for TCP bulk transfers, a zero header for everything else. Outside a batch (records opened by a
// direct call, as in the step-by-step tests) each packet is written at once.
//
// Threads: JavaScript thread only (the endpoint's poll callback and the connections' input
// calls), like the forwarders that feed it. One writer per fd, kept for the process's lifetime (a
// few hundred KiB, allocated on first use).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "../../common/seng_net.h"

namespace seng_dtls {

class TunWriter {
 public:
  struct Stats {
    double frames = 0, gsoFrames = 0, packets = 0, bytes = 0, dropped = 0, flushes = 0;
  };

  // The writer of fd (made on first use).
  static TunWriter *forFd(int fd);
  // Receive batches: packets offered between begin and end are written together at end.
  static void beginBatch();
  static void endBatch();
  // The counters of fd's writer (zero when it has none), or with fd < 0 the sum of all writers.
  static Stats totals(int fd);

  // Copies the packet for the next flush (at once when no batch is open). Counts a failed write
  // as dropped.
  void add(const uint8_t *packet, size_t length);

 private:
  explicit TunWriter(int fd);
  void flush();

  int fd_;
  std::unique_ptr<seng_gro> gro_;
  std::vector<uint8_t> arena_;  // copies of the pending packets
  size_t used_ = 0;
  bool pending_ = false;
  Stats stats_;
};

}  // namespace seng_dtls
