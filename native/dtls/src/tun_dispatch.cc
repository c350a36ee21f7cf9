// The gateway → enclave data path (see tun_dispatch.h).
#include "tun_dispatch.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common.h"
#include "conn.h"

namespace seng_dtls {

namespace {

constexpr int kRoundsPerWakeup = 8;  // then yield to the loop (level-triggered: it comes back)
constexpr size_t kMaxIpPacket = 65535;

uint32_t ipv4Destination(const uint8_t *p) {
  return (static_cast<uint32_t>(p[16]) << 24) | (static_cast<uint32_t>(p[17]) << 16) |
         (static_cast<uint32_t>(p[18]) << 8) | p[19];
}

double argNumber(const Napi::CallbackInfo &info, size_t i) {
  return info.Length() > i && info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1;
}

bool isUint32(double v) { return v >= 0 && v <= 4294967295.0 && v == static_cast<double>(static_cast<uint32_t>(v)); }

}  // namespace

Napi::Function TunDispatch::Init(Napi::Env env) {
  return DefineClass(env, "TunDispatch",
                     {
                         InstanceMethod<&TunDispatch::Start>("start"),
                         InstanceMethod<&TunDispatch::Close>("close"),
                         InstanceMethod<&TunDispatch::AddRoute>("route"),
                         InstanceMethod<&TunDispatch::RemoveRoute>("unroute"),
                         InstanceMethod<&TunDispatch::Stats>("stats"),
                         InstanceMethod<&TunDispatch::RouteStats>("routeStats"),
                     });
}

// new TunDispatch(tunFd, udpFd, mtu, batch = 64)
TunDispatch::TunDispatch(const Napi::CallbackInfo &info) : Napi::ObjectWrap<TunDispatch>(info) {
  Napi::Env env = info.Env();
  const double tun = argNumber(info, 0), udp = argNumber(info, 1), mtu = argNumber(info, 2);
  const double batch = info.Length() > 3 ? argNumber(info, 3) : 64;
  if (tun < 0 || udp < 0 || tun > INT32_MAX || udp > INT32_MAX)
    throwCode(env, "EDTLS_USAGE", "new TunDispatch(tunFd, udpFd, mtu, batch?)");
  if (!(mtu >= 68 && mtu <= static_cast<double>(kMaxPlain))) throwCode(env, "EDTLS_USAGE", "mtu must be 68..16384");
  if (!(batch >= 1 && batch <= kMaxBatch)) throwCode(env, "EDTLS_USAGE", "batch must be 1..256");
  tunFd_ = static_cast<int>(tun);
  udpFd_ = static_cast<int>(udp);
  mtu_ = static_cast<size_t>(mtu);
  batch_ = static_cast<unsigned>(batch);
  readBuf_.resize(kMaxIpPacket);
  sealBuf_.resize(batch_ * (mtu_ + RecordLayer::kOverhead));
  names_.resize(batch_);
  iov_.resize(batch_);
  msgs_.resize(batch_);
  ++gLiveDispatch;
}

// Only reached when not polling (a polling dispatch holds a reference to itself).
TunDispatch::~TunDispatch() { --gLiveDispatch; }

Napi::Value TunDispatch::Start(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (polling_ || closing_) throwCode(env, "EDTLS_USAGE", "dispatch already started or closed");
  uv_loop_t *loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) throwCode(env, "EDTLS_INTERNAL", "no event loop");
  int r = uv_poll_init(loop, &poll_, tunFd_);
  // UV_EEXIST: something else (e.g. the TUN device's own JavaScript reader) polls this descriptor.
  if (r != 0) throwCode(env, "EDTLS_SOCKET", std::string("cannot poll the TUN device: ") + uv_strerror(r));
  poll_.data = this;
  r = uv_poll_start(&poll_, UV_READABLE, OnPoll);
  polling_ = true;
  Ref();  // alive while libuv holds a pointer to us
  if (r != 0) {
    stopPolling();
    throwCode(env, "EDTLS_SOCKET", std::string("uv_poll_start: ") + uv_strerror(r));
  }
  return env.Undefined();
}

void TunDispatch::stopPolling() {
  if (!polling_ || closing_) return;
  closing_ = true;
  uv_poll_stop(&poll_);
  uv_close(reinterpret_cast<uv_handle_t *>(&poll_), OnClosed);
}

void TunDispatch::OnClosed(uv_handle_t *h) {
  auto *self = static_cast<TunDispatch *>(h->data);
  self->polling_ = false;
  self->Unref();
}

// close(): stops reading the device (at once; the handle is released by libuv shortly after).
Napi::Value TunDispatch::Close(const Napi::CallbackInfo &info) {
  stopPolling();
  closing_ = true;
  routes_.clear();
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
  if (closing_ || !conn->sendPath(&route.rl, &route.peer, &route.peerLen)) return Napi::Boolean::New(env, false);
  routes_[static_cast<uint32_t>(ip)] = std::move(route);
  return Napi::Boolean::New(env, true);
}

// unroute(ip): [packets, bytes, oversize] of the route, or undefined when there was none.
Napi::Value TunDispatch::RemoveRoute(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const double ip = argNumber(info, 0);
  if (!isUint32(ip)) throwCode(env, "EDTLS_USAGE", "unroute(ip)");
  auto it = routes_.find(static_cast<uint32_t>(ip));
  if (it == routes_.end()) return env.Undefined();
  Napi::Array a = Napi::Array::New(env, 3);
  a.Set(0u, it->second.packets);
  a.Set(1u, it->second.bytes);
  a.Set(2u, it->second.oversize);
  routes_.erase(it);
  return a;
}

Napi::Value TunDispatch::Stats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("reads", counters_.reads);
  o.Set("packets", counters_.packets);
  o.Set("bytes", counters_.bytes);
  o.Set("malformed", counters_.malformed);
  o.Set("unknownDestination", counters_.unknownDestination);
  o.Set("oversize", counters_.oversize);
  o.Set("sendFailed", counters_.sendFailed);
  o.Set("wakeups", counters_.wakeups);
  o.Set("routes", static_cast<double>(routes_.size()));
  o.Set("reading", polling_ && !closing_);
  if (readErrno_ != 0) o.Set("readError", std::strerror(readErrno_));
  return o;
}

// routeStats(): Float64Array of [ip, packets, bytes, oversize] per route (counters in bulk).
Napi::Value TunDispatch::RouteStats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
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

void TunDispatch::OnPoll(uv_poll_t *h, int status, int events) {
  auto *self = static_cast<TunDispatch *>(h->data);
  if (self == nullptr || self->closing_) return;
  if (status < 0) {
    self->readErrno_ = -status;
    self->stopPolling();
    return;
  }
  if ((events & UV_READABLE) != 0) self->drain();
}

// Reads up to batch_ packets per round, sends what they became, until the device is empty.
void TunDispatch::drain() {
  counters_.wakeups += 1;
  for (int round = 0; round < kRoundsPerWakeup && !closing_; round++) {
    unsigned queued = 0;
    unsigned readThisRound = 0;
    bool empty = false;
    while (readThisRound < batch_) {
      const ssize_t n = read(tunFd_, readBuf_.data(), readBuf_.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          readErrno_ = errno;  // e.g. the device was deleted: stop, the gateway sees readError
          stopPolling();
        }
        empty = true;
        break;
      }
      readThisRound++;
      counters_.reads += 1;
      if (queuePacket(readBuf_.data(), static_cast<size_t>(n), queued)) queued++;
    }
    sendQueued(queued);
    if (empty) return;
  }
}

// Seals one packet into slot `slot` of the batch when it has an owner; counts it otherwise.
bool TunDispatch::queuePacket(const uint8_t *p, size_t n, unsigned slot) {
  if (n < 20 || (p[0] >> 4) != 4) {
    counters_.malformed += 1;
    return false;
  }
  auto it = routes_.find(ipv4Destination(p));
  if (it == routes_.end()) {
    counters_.unknownDestination += 1;
    return false;
  }
  Route &route = it->second;
  std::shared_ptr<RecordLayer> rl = route.rl.lock();
  if (!rl) {  // the session ended and JavaScript has not unrouted it yet
    routes_.erase(it);
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
  names_[slot] = route.peer;
  iov_[slot].iov_base = out;
  iov_[slot].iov_len = len;
  std::memset(&msgs_[slot], 0, sizeof msgs_[slot]);
  msgs_[slot].msg_hdr.msg_name = &names_[slot];
  msgs_[slot].msg_hdr.msg_namelen = route.peerLen;
  msgs_[slot].msg_hdr.msg_iov = &iov_[slot];
  msgs_[slot].msg_hdr.msg_iovlen = 1;
  route.packets += 1;
  route.bytes += static_cast<double>(n);
  counters_.packets += 1;
  counters_.bytes += static_cast<double>(n);
  return true;
}

// sendmmsg(2) of the queued records; a full socket buffer drops the rest (loss, as on a wire).
void TunDispatch::sendQueued(unsigned count) {
  unsigned done = 0;
  while (done < count) {
    const int r = sendmmsg(udpFd_, msgs_.data() + done, count - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      // The first message failed (EAGAIN, ENOBUFS, EPERM, ...): drop it and try the rest.
      counters_.sendFailed += 1;
      ++gDroppedSends;
      done++;
      continue;
    }
    gDirectSends += static_cast<uint64_t>(r);
    done += static_cast<unsigned>(r);
  }
}

}  // namespace seng_dtls
