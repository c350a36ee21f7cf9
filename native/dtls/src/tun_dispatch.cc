// The gateway → enclave data path (see tun_dispatch.h).
#include "tun_dispatch.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/err.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <system_error>

#include "../../common/seng_net.h"
#include "thread_priority.h"
#include "common.h"
#include "conn.h"

namespace seng_dtls {

namespace {

uint32_t ipv4Destination(const uint8_t *p) {
  return (static_cast<uint32_t>(p[16]) << 24) | (static_cast<uint32_t>(p[17]) << 16) |
         (static_cast<uint32_t>(p[18]) << 8) | p[19];
}

double argNumber(const Napi::CallbackInfo &info, size_t i) {
  return info.Length() > i && info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1;
}

bool isUint32(double v) { return v >= 0 && v <= 4294967295.0 && v == static_cast<double>(static_cast<uint32_t>(v)); }

// Descriptors a dispatch thread reads: two readers of one device would split its packets.
std::mutex gDispatchedLock;
std::set<int> gDispatchedFds;

bool claimFd(int fd) {
  std::lock_guard<std::mutex> guard(gDispatchedLock);
  return gDispatchedFds.insert(fd).second;
}

void releaseFd(int fd) {
  std::lock_guard<std::mutex> guard(gDispatchedLock);
  gDispatchedFds.erase(fd);
}

}  // namespace

Napi::Function TunDispatch::Init(Napi::Env env) {
  return DefineClass(env, "TunDispatch",
                     {
                         InstanceMethod<&TunDispatch::Start>("start"),
                         InstanceMethod<&TunDispatch::Close>("close"),
                         InstanceMethod<&TunDispatch::AddRoute>("route"),
                         InstanceMethod<&TunDispatch::RemoveRoute>("unroute"),
                         InstanceMethod<&TunDispatch::AddDefaultRoute>("routeDefault"),
                         InstanceMethod<&TunDispatch::RemoveDefaultRoute>("unrouteDefault"),
                         InstanceMethod<&TunDispatch::Stats>("stats"),
                         InstanceMethod<&TunDispatch::RouteStats>("routeStats"),
                     });
}

// new TunDispatch(tunFd, udpFd, mtu, batch = 64, vnetHdr = false)
TunDispatch::TunDispatch(const Napi::CallbackInfo &info) : Napi::ObjectWrap<TunDispatch>(info) {
  Napi::Env env = info.Env();
  const double tun = argNumber(info, 0), udp = argNumber(info, 1), mtu = argNumber(info, 2);
  const double batch = info.Length() > 3 ? argNumber(info, 3) : 64;
  if (tun < 0 || udp < 0 || tun > INT32_MAX || udp > INT32_MAX)
    throwCode(env, "EDTLS_USAGE", "new TunDispatch(tunFd, udpFd, mtu, batch?, vnetHdr?)");
  if (!(mtu >= 68 && mtu <= static_cast<double>(kMaxPlain))) throwCode(env, "EDTLS_USAGE", "mtu must be 68..16384");
  if (!(batch >= 1 && batch <= kMaxBatch)) throwCode(env, "EDTLS_USAGE", "batch must be 1..256");
  tunFd_ = static_cast<int>(tun);
  udpFd_ = static_cast<int>(udp);
  mtu_ = static_cast<size_t>(mtu);
  batch_ = static_cast<unsigned>(batch);
  vnetHdr_ = info.Length() > 4 && info[4].ToBoolean().Value();
  // A device with this MTU delivers packets of at most mtu_ bytes; room for one read of any size
  // (a larger packet stays whole and counts as oversize; a TSO frame splits into segments) after
  // batch_ - 1 packets.
  const size_t lastRead = vnetHdr_ ? SENG_GSO_SPLIT_ROOM : SENG_TUN_READ_MAX;
  const unsigned slots = vnetHdr_ ? batch_ + kMaxSegs : batch_;
  if (vnetHdr_) frameBuf_.resize(SENG_TUN_FRAME_MAX);
  readBuf_.resize(static_cast<size_t>(vnetHdr_ ? slots : batch_ - 1) * mtu_ + lastRead);
  readEnds_.resize(slots);
  sealBuf_.resize(slots * (mtu_ + RecordLayer::kOverhead));
  const char *gso = std::getenv("SENG_UDP_GSO");  // "0": sendmmsg of single datagrams (A/B runs)
  sender_ = std::make_unique<UdpSendBatch>(udpFd_, slots, gso == nullptr || std::strcmp(gso, "0") != 0);
  udpGso_ = sender_->gso();
  ++gLiveDispatch;
}

TunDispatch::~TunDispatch() {
  stopThread();
  --gLiveDispatch;
}

Napi::Value TunDispatch::Start(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (running_ || stop_ || wakeFd_ >= 0) throwCode(env, "EDTLS_USAGE", "dispatch already started or closed");
  if (!claimFd(tunFd_)) throwCode(env, "EDTLS_BUSY", "another dispatch already reads this device");
  wakeFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakeFd_ < 0) {
    releaseFd(tunFd_);
    throwCode(env, "EDTLS_INTERNAL", std::string("eventfd: ") + std::strerror(errno));
  }
  running_ = true;
  try {
    thread_ = std::thread([this] { run(); });
  } catch (const std::system_error &e) {
    running_ = false;
    close(wakeFd_);
    wakeFd_ = -1;
    releaseFd(tunFd_);
    throwCode(env, "EDTLS_INTERNAL", std::string("cannot start the dispatch thread: ") + e.what());
  }
  return env.Undefined();
}

// Tells the thread to stop and waits for it (it wakes at once: the eventfd is in its poll set).
void TunDispatch::stopThread() {
  stop_ = true;
  if (thread_.joinable()) {
    const uint64_t one = 1;
    ssize_t w;
    do {
      w = write(wakeFd_, &one, sizeof one);
    } while (w < 0 && errno == EINTR);
    thread_.join();
  }
  running_ = false;
  if (wakeFd_ >= 0) {  // it was started: the descriptor was ours to read
    close(wakeFd_);
    wakeFd_ = -1;
    releaseFd(tunFd_);
  }
}

// close(): stops reading the device; returns once the thread has ended.
Napi::Value TunDispatch::Close(const Napi::CallbackInfo &info) {
  stopThread();
  std::lock_guard<std::mutex> guard(mu_);
  routes_.clear();
  defaultRoute_.reset();
  return info.Env().Undefined();
}

// route(ipv4HostOrder, conn): packets for ip go to conn (a server connection on the native record
// layer). Returns false (and routes nothing) when conn is not such an open connection.
Napi::Value TunDispatch::AddRoute(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const double ip = argNumber(info, 0);
  if (!isUint32(ip) || info.Length() < 2) throwCode(env, "EDTLS_USAGE", "route(ip, conn)");
  Conn *conn = Conn::FromValue(env, info[1]);
  if (conn == nullptr) throwCode(env, "EDTLS_USAGE", "route(ip, conn): conn is not a Conn");
  Route route;
  if (stop_ || !conn->sendPath(&route.rl, &route.peer, &route.peerLen)) return Napi::Boolean::New(env, false);
  std::lock_guard<std::mutex> guard(mu_);
  routes_[static_cast<uint32_t>(ip)] = std::move(route);
  return Napi::Boolean::New(env, true);
}

// unroute(ip): [packets, bytes, oversize] of the route, or undefined when there was none.
Napi::Value TunDispatch::RemoveRoute(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const double ip = argNumber(info, 0);
  if (!isUint32(ip)) throwCode(env, "EDTLS_USAGE", "unroute(ip)");
  std::lock_guard<std::mutex> guard(mu_);
  auto it = routes_.find(static_cast<uint32_t>(ip));
  if (it == routes_.end()) return env.Undefined();
  Napi::Array a = Napi::Array::New(env, 3);
  a.Set(0u, it->second.packets);
  a.Set(1u, it->second.bytes);
  a.Set(2u, it->second.oversize);
  routes_.erase(it);
  return a;
}

// routeDefault(conn): packets for any destination without a route go to conn (an open connection
// on the native record layer). Returns false (and changes nothing) when conn is not one.
Napi::Value TunDispatch::AddDefaultRoute(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Conn *conn = info.Length() < 1 ? nullptr : Conn::FromValue(env, info[0]);
  if (conn == nullptr) throwCode(env, "EDTLS_USAGE", "routeDefault(conn): conn is not a Conn");
  auto route = std::make_unique<Route>();
  if (stop_ || !conn->sendPath(&route->rl, &route->peer, &route->peerLen)) return Napi::Boolean::New(env, false);
  std::lock_guard<std::mutex> guard(mu_);
  defaultRoute_ = std::move(route);
  return Napi::Boolean::New(env, true);
}

// unrouteDefault(): [packets, bytes, oversize] of the default route, or undefined when there was none.
Napi::Value TunDispatch::RemoveDefaultRoute(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> guard(mu_);
  if (!defaultRoute_) return env.Undefined();
  Napi::Array a = Napi::Array::New(env, 3);
  a.Set(0u, defaultRoute_->packets);
  a.Set(1u, defaultRoute_->bytes);
  a.Set(2u, defaultRoute_->oversize);
  defaultRoute_.reset();
  return a;
}

Napi::Value TunDispatch::Stats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  std::lock_guard<std::mutex> guard(mu_);
  o.Set("reads", counters_.reads);
  o.Set("packets", counters_.packets);
  o.Set("bytes", counters_.bytes);
  o.Set("malformed", counters_.malformed);
  o.Set("unknownDestination", counters_.unknownDestination);
  o.Set("oversize", counters_.oversize);
  o.Set("sendFailed", counters_.sendFailed);
  o.Set("wakeups", counters_.wakeups);
  o.Set("gsoFrames", counters_.gsoFrames);
  o.Set("gsoSegments", counters_.gsoSegments);
  o.Set("badFrames", counters_.badFrames);
  o.Set("sendCalls", counters_.sendCalls);
  o.Set("udpGsoSends", counters_.udpGsoSends);
  o.Set("udpGsoRecords", counters_.udpGsoRecords);
  o.Set("udpGso", udpGso_.load());
  o.Set("offload", vnetHdr_);
  o.Set("routes", static_cast<double>(routes_.size()));
  o.Set("defaultRoute", defaultRoute_ != nullptr);
  o.Set("reading", running_.load() && !stop_.load());
  o.Set("tid", static_cast<double>(tid_.load()));
  o.Set("nice", nice_.load());
  o.Set("priorityRaised", priorityRaised_.load());
  if (readErrno_ != 0) o.Set("readError", std::strerror(readErrno_));
  return o;
}

// routeStats(): Float64Array of [ip, packets, bytes, oversize] per route (counters in bulk).
Napi::Value TunDispatch::RouteStats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> guard(mu_);
  Napi::Float64Array a = Napi::Float64Array::New(env, routes_.size() * 4);
  size_t i = 0;
  for (const auto &[ip, r] : routes_) {
    a[i++] = ip;
    a[i++] = r.packets;
    a[i++] = r.bytes;
    a[i++] = r.oversize;
  }
  return a;
}

// The thread: wait for the device (or the stop signal), read a batch, seal it, send it.
void TunDispatch::run() {
  tid_ = static_cast<long>(syscall(SYS_gettid));
  const ThreadPriority prio = raiseForwardingPriority();  // forwarding before the control plane
  nice_ = prio.nice;
  priorityRaised_ = prio.raised;
  pollfd fds[2] = {{tunFd_, POLLIN, 0}, {wakeFd_, POLLIN, 0}};
  while (!stop_) {
    const int r = poll(fds, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      readErrno_ = errno;
      break;
    }
    if (stop_ || (fds[1].revents & POLLIN) != 0) break;
    if ((fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0 && (fds[0].revents & POLLIN) == 0) {
      readErrno_ = (fds[0].revents & POLLNVAL) != 0 ? EBADF : EIO;  // e.g. the device was deleted
      break;
    }
    // Read until the device is empty, a batch at a time.
    for (bool more = true; more && !stop_;) {
      unsigned count = 0;
      more = readBatch(&count);
      if (count == 0 && batchBadFrames_ == 0) break;
      sealBatch(count);
      sendQueued();
    }
    ERR_clear_error();  // this thread's OpenSSL error queue
  }
  running_ = false;
}

// Reads up to batch_ packets (frames with vnetHdr_, each split into packets); false when the
// device is empty (or failed) afterwards. *count = packets in readBuf_ (readEnds_).
bool TunDispatch::readBatch(unsigned *count) {
  const size_t lastRead = vnetHdr_ ? SENG_GSO_SPLIT_ROOM : SENG_TUN_READ_MAX;
  const size_t slots = readEnds_.size();
  batchFrames_ = batchGsoFrames_ = batchGsoSegments_ = batchBadFrames_ = 0;
  for (unsigned reads = 0; reads < batch_;) {
    const size_t off = *count == 0 ? 0 : readEnds_[*count - 1];
    // Keep room for one more read of any size (and its segments); else send this batch first.
    if (readBuf_.size() - off < lastRead || slots - *count < (vnetHdr_ ? SENG_GSO_MAX_SEGS : 1)) return true;
    const int n = seng_tun_read(tunFd_, vnetHdr_ ? 1 : 0, mtu_, frameBuf_.data(), frameBuf_.size(),
                                readBuf_.data() + off, readBuf_.size() - off, readEnds_.data() + *count,
                                slots - *count);
    if (n < 0) {
      if (n != -EAGAIN) {
        readErrno_ = -n;
        stop_ = true;
      }
      return false;
    }
    reads++;
    batchFrames_ += 1;
    if (n == 0) {  // a frame seng_gso_split refused (malformed or an unsupported GSO type)
      batchBadFrames_ += 1;
      continue;
    }
    if (n > 1) {
      batchGsoFrames_ += 1;
      batchGsoSegments_ += n;
    }
    // seng_tun_read's ends are relative to where it wrote: make them relative to readBuf_.
    for (int i = 0; i < n; i++) readEnds_[*count + i] += static_cast<uint32_t>(off);
    *count += static_cast<unsigned>(n);
  }
  return true;
}

// Seals the batch under the table lock; returns how many records are queued for sending.
unsigned TunDispatch::sealBatch(unsigned count) {
  std::lock_guard<std::mutex> guard(mu_);
  counters_.wakeups += 1;
  counters_.reads += count;
  counters_.gsoFrames += batchGsoFrames_;
  counters_.gsoSegments += batchGsoSegments_;
  counters_.badFrames += batchBadFrames_;
  counters_.malformed += batchBadFrames_;
  unsigned queued = 0;
  size_t off = 0;
  for (unsigned i = 0; i < count; i++) {
    if (queuePacket(readBuf_.data() + off, readEnds_[i] - off, queued)) queued++;
    off = readEnds_[i];
  }
  return queued;
}

// The live route for destination (its own, else the default route), under mu_; routes whose
// session ended (JavaScript has not unrouted them yet) are dropped on the way. nullptr if none.
TunDispatch::Route *TunDispatch::findRoute(uint32_t destination) {
  auto it = routes_.find(destination);
  if (it != routes_.end()) {
    if (!it->second.rl.expired()) return &it->second;
    routes_.erase(it);
  }
  if (defaultRoute_ && defaultRoute_->rl.expired()) defaultRoute_.reset();
  return defaultRoute_.get();
}

// Seals one packet into slot `slot` of the batch when it has an owner; counts it otherwise.
bool TunDispatch::queuePacket(const uint8_t *p, size_t n, unsigned slot) {
  if (n < 20 || (p[0] >> 4) != 4) {
    counters_.malformed += 1;
    return false;
  }
  Route *found = findRoute(ipv4Destination(p));
  if (found == nullptr) {
    counters_.unknownDestination += 1;
    return false;
  }
  Route &route = *found;
  std::shared_ptr<RecordLayer> rl = route.rl.lock();
  if (!rl) {  // the session ended just now; the next batch drops the route
    counters_.unknownDestination += 1;
    return false;
  }
  if (n > mtu_) {
    counters_.oversize += 1;
    route.oversize += 1;
    return false;
  }
  uint8_t *out = sealBuf_.data() + slot * (mtu_ + RecordLayer::kOverhead);
  const size_t len = rl->seal(kApplicationData, p, n, out);
  if (len == 0) {
    counters_.sendFailed += 1;
    return false;
  }
  sender_->add(out, len, route.peer, route.peerLen);  // slot < capacity: cannot be full
  route.packets += 1;
  route.bytes += static_cast<double>(n);
  counters_.packets += 1;
  counters_.bytes += static_cast<double>(n);
  return true;
}

// Sends the queued records (udp_send_batch.h); a full socket buffer drops them (loss, as on a wire).
void TunDispatch::sendQueued() {
  if (sender_->size() == 0) return;
  const UdpSendBatch::Result r = sender_->send();
  udpGso_ = sender_->gso();
  std::lock_guard<std::mutex> guard(mu_);
  counters_.sendFailed += r.failed;
  counters_.sendCalls += r.syscalls;
  counters_.udpGsoSends += r.gsoMessages;
  counters_.udpGsoRecords += r.gsoRecords;
}

}  // namespace seng_dtls
