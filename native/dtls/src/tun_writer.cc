// Coalescing writes to an offload TUN device (see tun_writer.h).
#include "tun_writer.h"

#include <cerrno>
#include <cstring>
#include <unordered_map>

namespace seng_dtls {

namespace {

// Room for one batch of full-size packets: recvmmsg reads 32 datagrams per round, each up to a
// few records; a full arena is flushed early, which only shortens a GSO frame.
constexpr size_t kArenaBytes = 256 * 1536;

std::unordered_map<int, std::unique_ptr<TunWriter>> gWriters;
std::vector<TunWriter *> gDirty;  // writers with pending packets (JavaScript thread only)
int gBatchDepth = 0;

}  // namespace

TunWriter::TunWriter(int fd) : fd_(fd), gro_(new seng_gro) {
  seng_gro_init(gro_.get());
  arena_.resize(kArenaBytes);
}

TunWriter *TunWriter::forFd(int fd) {
  auto &slot = gWriters[fd];
  if (!slot) slot.reset(new TunWriter(fd));
  return slot.get();
}

void TunWriter::beginBatch() { gBatchDepth++; }

void TunWriter::endBatch() {
  if (gBatchDepth > 0) gBatchDepth--;
  if (gBatchDepth > 0) return;
  std::vector<TunWriter *> dirty;
  dirty.swap(gDirty);
  for (TunWriter *w : dirty) w->flush();
}

TunWriter::Stats TunWriter::totals(int which) {
  Stats t;
  for (const auto &[fd, w] : gWriters) {
    if (which >= 0 && fd != which) continue;
    t.frames += w->stats_.frames;
    t.gsoFrames += w->stats_.gsoFrames;
    t.packets += w->stats_.packets;
    t.bytes += w->stats_.bytes;
    t.dropped += w->stats_.dropped;
    t.flushes += w->stats_.flushes;
  }
  return t;
}

void TunWriter::add(const uint8_t *p, size_t n) {
  if (n == 0 || n > arena_.size()) {
    stats_.dropped += 1;
    return;
  }
  if (arena_.size() - used_ < n) flush();
  uint8_t *copy = arena_.data() + used_;
  std::memcpy(copy, p, n);
  int r = seng_gro_add(gro_.get(), copy, n);
  if (r == -ENOSPC) {
    // The batch is full: write it (the copy moves to the arena's start), then add again.
    flush();
    copy = arena_.data();
    std::memcpy(copy, p, n);
    r = seng_gro_add(gro_.get(), copy, n);
  }
  if (r != 0) {
    stats_.dropped += 1;
    return;
  }
  used_ += n;
  if (gBatchDepth == 0) {
    flush();  // no receive batch is open: nothing would flush it later
    return;
  }
  if (!pending_) {
    pending_ = true;
    gDirty.push_back(this);
  }
}

void TunWriter::flush() {
  pending_ = false;
  if (used_ == 0) return;
  seng_gro_result res{};
  seng_gro_write(gro_.get(), fd_, &res);  // resets gro_
  used_ = 0;
  stats_.flushes += 1;
  stats_.frames += res.frames_written;
  stats_.gsoFrames += res.frames_gso;
  stats_.packets += res.packets_written;
  stats_.bytes += res.bytes_written;
  stats_.dropped += res.packets_dropped;
}

}  // namespace seng_dtls
