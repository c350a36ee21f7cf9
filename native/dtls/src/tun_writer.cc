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

// Writers owned by other threads (alive), and the summed counters of retired ones, by fd.
std::mutex gOwnedLock;
std::vector<TunWriter *> gOwned;
std::unordered_map<int, TunWriter::Stats> gRetired;

void addStats(TunWriter::Stats *t, const TunWriter::Stats &s) {
  t->frames += s.frames;
  t->gsoFrames += s.gsoFrames;
  t->packets += s.packets;
  t->bytes += s.bytes;
  t->dropped += s.dropped;
  t->flushes += s.flushes;
}

}  // namespace

TunWriter::TunWriter(int fd, bool owned) : fd_(fd), owned_(owned), gro_(new seng_gro) {
  seng_gro_init(gro_.get());
  // UDP datagrams of one flow and size are coalesced too (USO frames); SENG_TUN_USO=0: TCP only.
  gro_->merge_udp = seng_tun_uso_allowed() ? 1 : 0;
  if (!owned_) arena_.resize(kArenaBytes);  // an owned writer borrows the packets
}

TunWriter::~TunWriter() = default;

TunWriter *TunWriter::forFd(int fd) {
  auto &slot = gWriters[fd];
  if (!slot) slot.reset(new TunWriter(fd, false));
  return slot.get();
}

std::unique_ptr<TunWriter> TunWriter::makeOwned(int fd) {
  std::unique_ptr<TunWriter> w(new TunWriter(fd, true));
  std::lock_guard<std::mutex> guard(gOwnedLock);
  gOwned.push_back(w.get());
  return w;
}

void TunWriter::retire(std::unique_ptr<TunWriter> w) {
  if (!w) return;
  w->flush();
  const Stats s = w->stats();
  std::lock_guard<std::mutex> guard(gOwnedLock);
  for (auto it = gOwned.begin(); it != gOwned.end(); ++it) {
    if (*it == w.get()) {
      gOwned.erase(it);
      break;
    }
  }
  addStats(&gRetired[w->fd_], s);
}

TunWriter::Stats TunWriter::stats() const {
  std::lock_guard<std::mutex> guard(statsLock_);
  return stats_;
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
    addStats(&t, w->stats());
  }
  std::lock_guard<std::mutex> guard(gOwnedLock);
  for (const TunWriter *w : gOwned) {
    if (which >= 0 && w->fd_ != which) continue;
    addStats(&t, w->stats());
  }
  for (const auto &[fd, s] : gRetired) {
    if (which >= 0 && fd != which) continue;
    addStats(&t, s);
  }
  return t;
}

void TunWriter::add(const uint8_t *p, size_t n) {
  if (owned_) {
    lend(p, n);
    return;
  }
  if (n == 0 || n > arena_.size()) {
    std::lock_guard<std::mutex> guard(statsLock_);
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
    std::lock_guard<std::mutex> guard(statsLock_);
    stats_.dropped += 1;
    return;
  }
  used_ += n;
  if (owned_) return;  // its thread flushes at the end of each batch
  if (gBatchDepth == 0) {
    flush();  // no receive batch is open: nothing would flush it later
    return;
  }
  if (!pending_) {
    pending_ = true;
    gDirty.push_back(this);
  }
}

// An owned writer's add(): the packet stays where its owner keeps it until the next flush().
void TunWriter::lend(const uint8_t *p, size_t n) {
  int r = seng_gro_add(gro_.get(), p, n);  // refuses 0 and > 65535 bytes
  if (r == -ENOSPC) {
    flush();  // the batch is full: write it, then add again
    r = seng_gro_add(gro_.get(), p, n);
  }
  if (r != 0) {
    std::lock_guard<std::mutex> guard(statsLock_);
    stats_.dropped += 1;
    return;
  }
  used_ += n;
}

void TunWriter::flush() {
  pending_ = false;
  if (used_ == 0) return;
  seng_gro_result res{};
  seng_gro_write(gro_.get(), fd_, &res);  // resets gro_
  used_ = 0;
  std::lock_guard<std::mutex> guard(statsLock_);
  stats_.flushes += 1;
  stats_.frames += res.frames_written;
  stats_.gsoFrames += res.frames_gso;
  stats_.packets += res.packets_written;
  stats_.bytes += res.bytes_written;
  stats_.dropped += res.packets_dropped;
}

}  // namespace seng_dtls
