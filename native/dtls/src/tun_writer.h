// TunWriter: the enclave → device write side for a TUN fd opened with IFF_VNET_HDR (offload on).
// Valid packets from the receive sessions' TUN forwarders (tun_forward.h) are copied into the
// writer of their fd; at the end of one receive batch (one recvmmsg(2) wakeup of the UDP endpoint)
// the writer coalesces consecutive TCP segments of one flow into GSO super-packets and UDP
// datagrams of one flow and size into USO frames (seng_gro_*, native/common/seng_net.h;
// SENG_TUN_USO=0: TCP only) and writes every frame with its virtio_net_hdr: fewer, larger writes
// for bulk transfers, a zero header for everything else. Outside a batch (records opened by a
// direct call, as in the step-by-step tests) each packet is written at once.
//
// Threads: the shared writer of an fd (forFd) is JavaScript-thread only (the endpoint's poll or
// queue callback and the connections' input calls), like the forwarders that feed it; one per fd,
// kept for the process's lifetime (a few hundred KiB, allocated on first use). The endpoint's
// receive thread (recv_thread.h) has writers of its own (makeOwned): only that thread adds to and
// flushes them, always in batches (it calls flush() at each batch's end); retire() folds their
// counters into the fd's totals when the thread ends. An owned writer does not copy: it keeps
// pointers to the packets it is given, which the owner keeps valid until the next flush() (the
// receive thread decrypts in place in its receive arena and flushes before it reads into the
// arena again) — one copy of every packet less. Counters are read under a per-writer lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
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

  // A writer for one thread's own use (see above: it borrows the packets), counted in totals(fd).
  static std::unique_ptr<TunWriter> makeOwned(int fd);
  // The owner is done with it: its counters stay in totals(fd), its memory is freed.
  static void retire(std::unique_ptr<TunWriter> owned);
  ~TunWriter();

  // Takes the packet for the next flush (a shared writer outside a batch: at once): a shared
  // writer copies it, an owned one borrows it until then. Counts a failed write as dropped.
  void add(const uint8_t *packet, size_t length);
  // Writes the pending packets (coalesced).
  void flush();

 private:
  TunWriter(int fd, bool owned);
  void lend(const uint8_t *packet, size_t length);
  Stats stats() const;

  int fd_;
  bool owned_;
  std::unique_ptr<seng_gro> gro_;
  std::vector<uint8_t> arena_;  // copies of the pending packets (shared writers only)
  size_t used_ = 0;
  bool pending_ = false;
  mutable std::mutex statsLock_;  // stats_ (an owned writer's thread writes, JavaScript reads)
  Stats stats_;
};

}  // namespace seng_dtls
