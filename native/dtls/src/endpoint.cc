// The UDP endpoint (see endpoint.h).
#include "endpoint.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "address.h"
#include "common.h"
#include "conn.h"
#include "tun_writer.h"

namespace seng_dtls {

namespace {

constexpr size_t kSlot = kMaxPlain + 2048;  // the largest DTLS record plus headers
constexpr int kRoundsPerWakeup = 8;         // then yield to the loop (level-triggered: it comes back)
constexpr size_t kRouteValues = 12;         // numbers per route in unroute/routeStats

double argNumber(const Napi::CallbackInfo &info, size_t i) {
  return info.Length() > i && info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1;
}

bool isUint32(double v) { return v >= 0 && v <= 4294967295.0 && v == static_cast<double>(static_cast<uint32_t>(v)); }
bool isPort(double v) { return v >= 0 && v <= 65535 && v == static_cast<double>(static_cast<uint16_t>(v)); }

// [lastRxMs, packets, bytes, dropped, oversize, malformed, spoofed, lastSpoofedSource, replayed,
//  forged, other, toJs] (keep in sync with src/dtls/native.ts).
void routeValues(const RecvThread::RouteCounters &c, double *v) {
  const double values[kRouteValues] = {
      c.lastRxMs, c.packets, c.bytes,  c.dropped, c.oversize, c.malformed, c.spoofed, c.lastSpoofedSource,
      c.replayed, c.forged,  c.other,  c.toJs,
  };
  std::memcpy(v, values, sizeof values);
}

Napi::Value routeArray(Napi::Env env, const RecvThread::RouteCounters &c) {
  double v[kRouteValues];
  routeValues(c, v);
  Napi::Array a = Napi::Array::New(env, kRouteValues);
  for (uint32_t i = 0; i < kRouteValues; i++) a.Set(i, v[i]);
  return a;
}

}  // namespace

Napi::Function Endpoint::Init(Napi::Env env) {
  return DefineClass(env, "Endpoint",
                     {
                         InstanceMethod<&Endpoint::Start>("start"),
                         InstanceMethod<&Endpoint::Close>("close"),
                         InstanceAccessor<&Endpoint::Arena>("arena"),
                         InstanceAccessor<&Endpoint::Meta>("meta"),
                         InstanceAccessor<&Endpoint::Fd>("fd"),
                         InstanceMethod<&Endpoint::Route>("route"),
                         InstanceMethod<&Endpoint::Unroute>("unroute"),
                         InstanceMethod<&Endpoint::RouteStats>("routeStats"),
                         InstanceMethod<&Endpoint::ThreadStats>("threadStats"),
                     });
}

// new Endpoint(fd, onBatch, batch?, threaded?): takes ownership of fd (an IPv4 UDP socket,
// non-blocking); batch (1..32, default 32) datagrams are read per recvmmsg call (a client needs
// few); threaded: a receive thread reads the socket (recv_thread.h).
Endpoint::Endpoint(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Endpoint>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction())
    throwCode(env, "EDTLS_USAGE", "new Endpoint(fd, onBatch, batch?)");
  if (info.Length() >= 3 && info[2].IsNumber()) {
    int b = info[2].As<Napi::Number>().Int32Value();
    if (b < 1 || b > static_cast<int>(kBatch)) throwCode(env, "EDTLS_USAGE", "batch must be 1..32");
    batch_ = static_cast<unsigned>(b);
  }
  fd_ = info[0].As<Napi::Number>().Int32Value();
  if (fd_ < 0) throwCode(env, "EDTLS_USAGE", "bad fd");
  threaded_ = info.Length() >= 4 && info[3].ToBoolean().Value();
  onBatch_ = Napi::Persistent(info[1].As<Napi::Function>());
  arena_ = Napi::Persistent(Napi::Buffer<uint8_t>::New(env, kSlot * batch_));
  arenaData_ = arena_.Value().Data();
  meta_ = Napi::Persistent(Napi::Uint32Array::New(env, batch_ * 4));
  metaData_ = meta_.Value().Data();
  for (unsigned i = 0; i < batch_; i++) {
    iov_[i].iov_base = arenaData_ + i * kSlot;
    iov_[i].iov_len = kSlot;
  }
  env_ = env;
  ++gLiveEndpoint;
}

Endpoint::~Endpoint() {
  // Only reached when not polling (a polling endpoint holds a reference to itself).
  closeFd();
}

// Closes the socket once; gLiveEndpoint counts open sockets.
void Endpoint::closeFd() {
  if (fd_ < 0) return;
  close(fd_);
  fd_ = -1;
  --gLiveEndpoint;
}

Napi::Value Endpoint::Arena(const Napi::CallbackInfo &info) {
  return arena_.IsEmpty() ? info.Env().Undefined() : arena_.Value();
}
Napi::Value Endpoint::Meta(const Napi::CallbackInfo &info) {
  return meta_.IsEmpty() ? info.Env().Undefined() : meta_.Value();
}
Napi::Value Endpoint::Fd(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), closing_ ? -1 : fd_);
}

Napi::Value Endpoint::Start(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (polling_ || closing_) throwCode(env, "EDTLS_USAGE", "endpoint already started or closed");
  uv_loop_t *loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) throwCode(env, "EDTLS_INTERNAL", "no event loop");
  if (threaded_) {
    const int a = uv_async_init(loop, &wake_, OnWake);
    if (a != 0) throwCode(env, "EDTLS_SOCKET", std::string("uv_async_init: ") + uv_strerror(a));
    wake_.data = this;
    async_ = std::make_unique<Napi::AsyncContext>(env, "seng-dtls-udp");
    polling_ = true;
    Ref();  // alive while libuv holds a pointer to us
    recv_ = std::make_unique<RecvThread>(fd_, batch_);
    std::string err;
    uv_async_t *wake = &wake_;
    if (!recv_->start([wake] { uv_async_send(wake); }, &err)) {
      closing_ = true;
      uv_close(handle(), OnClosed);
      throwCode(env, "EDTLS_INTERNAL", err);
    }
    return env.Undefined();
  }
  int r = uv_poll_init(loop, &poll_, fd_);
  if (r != 0) throwCode(env, "EDTLS_SOCKET", std::string("uv_poll_init: ") + uv_strerror(r));
  poll_.data = this;
  async_ = std::make_unique<Napi::AsyncContext>(env, "seng-dtls-udp");
  r = uv_poll_start(&poll_, UV_READABLE, OnPoll);
  if (r != 0) {
    // libuv owns the handle until its close callback: stay alive until then.
    closing_ = true;
    polling_ = true;
    Ref();
    uv_close(reinterpret_cast<uv_handle_t *>(&poll_), OnClosed);
    throwCode(env, "EDTLS_SOCKET", std::string("uv_poll_start: ") + uv_strerror(r));
  }
  polling_ = true;
  Ref();  // alive while libuv holds a pointer to us
  return env.Undefined();
}

// close(onClosed?): stops reading; the socket is closed once libuv has let go of the handle, then
// onClosed() runs.
Napi::Value Endpoint::Close(const Napi::CallbackInfo &info) {
  if (closing_) return info.Env().Undefined();
  closing_ = true;
  if (info.Length() >= 1 && info[0].IsFunction()) onClosed_ = Napi::Persistent(info[0].As<Napi::Function>());
  if (polling_) {
    if (threaded_) {
      recv_->stop();  // joined: nothing reads the socket or signals the handle any more
    } else {
      uv_poll_stop(&poll_);
    }
    uv_close(handle(), OnClosed);
  } else {
    closeFd();
    Napi::FunctionReference cb = std::move(onClosed_);
    release();
    if (!cb.IsEmpty()) cb.Call({});
  }
  return info.Env().Undefined();
}

void Endpoint::OnClosed(uv_handle_t *h) {
  auto *self = static_cast<Endpoint *>(h->data);
  if (self->recv_) self->recv_->stop();
  self->recv_.reset();
  self->closeFd();
  self->polling_ = false;
  Napi::Env env(self->env_);
  Napi::HandleScope scope(env);
  if (!self->onClosed_.IsEmpty()) {
    Napi::FunctionReference cb = std::move(self->onClosed_);
    try {
      cb.MakeCallback(env.Global(), {}, self->async_ ? static_cast<napi_async_context>(*self->async_) : nullptr);
    } catch (const Napi::Error &e) {
      napi_fatal_exception(self->env_, e.Value());
    }
  }
  self->async_.reset();
  self->release();
  self->Unref();
}

// Drops the references to JavaScript (the batch handler's closure refers back to this object:
// kept, the persistent handles would keep the whole graph alive forever).
void Endpoint::release() {
  onBatch_.Reset();
  onClosed_.Reset();
  arena_.Reset();
  meta_.Reset();
  arenaData_ = nullptr;
  metaData_ = nullptr;
}

void Endpoint::OnPoll(uv_poll_t *h, int status, int events) {
  auto *self = static_cast<Endpoint *>(h->data);
  if (self == nullptr || self->closing_ || self->metaData_ == nullptr || status < 0 || (events & UV_READABLE) == 0)
    return;
  self->drain();
}

void Endpoint::drain() {
  Napi::Env env(env_);
  Napi::HandleScope scope(env);
  for (int round = 0; round < kRoundsPerWakeup && !closing_; round++) {
    for (unsigned i = 0; i < batch_; i++) {
      std::memset(&msgs_[i].msg_hdr, 0, sizeof msgs_[i].msg_hdr);
      msgs_[i].msg_hdr.msg_iov = &iov_[i];
      msgs_[i].msg_hdr.msg_iovlen = 1;
      msgs_[i].msg_hdr.msg_name = &addrs_[i];
      msgs_[i].msg_hdr.msg_namelen = sizeof addrs_[i];
      msgs_[i].msg_len = 0;
    }
    int n;
    do {
      n = recvmmsg(fd_, msgs_, batch_, MSG_DONTWAIT, nullptr);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return;  // EAGAIN (or an error such as ECONNREFUSED from ICMP: nothing to read)
    for (int i = 0; i < n; i++) {
      const msghdr &m = msgs_[i].msg_hdr;
      bool ok = (m.msg_flags & MSG_TRUNC) == 0 && m.msg_namelen >= sizeof(sockaddr_in) &&
                addrs_[i].sin_family == AF_INET && msgs_[i].msg_len <= kSlot;
      metaData_[4 * i] = static_cast<uint32_t>(i * kSlot);
      metaData_[4 * i + 1] = ok ? msgs_[i].msg_len : 0;
      metaData_[4 * i + 2] = ntohl(addrs_[i].sin_addr.s_addr);
      metaData_[4 * i + 3] = ntohs(addrs_[i].sin_port);
    }
    if (!deliver(static_cast<unsigned>(n))) return;
    if (static_cast<unsigned>(n) < batch_) return;
  }
}

// Calls onBatch(n) for the datagrams described in meta; false when it threw (reported as an
// uncaught exception).
bool Endpoint::deliver(unsigned n) {
  Napi::Env env(env_);
  // One batch: the offload TUN writers coalesce what its records forwarded.
  TunWriter::beginBatch();
  try {
    onBatch_.MakeCallback(env.Global(), {Napi::Number::New(env, n)}, *async_);
    TunWriter::endBatch();
  } catch (const Napi::Error &e) {
    TunWriter::endBatch();
    // An exception from the batch handler is an uncaught exception of the process, like one
    // thrown by a node event listener.
    napi_fatal_exception(env_, e.Value());
    return false;
  }
  return true;
}

void Endpoint::OnWake(uv_async_t *h) {
  auto *self = static_cast<Endpoint *>(h->data);
  if (self == nullptr || self->closing_ || self->metaData_ == nullptr || !self->recv_) return;
  self->drainQueue();
}

// Threaded: what the receive thread queued, batch_ items per callback, up to kRoundsPerWakeup
// callbacks; then the loop gets a turn (the handle is signalled again when items remain).
void Endpoint::drainQueue() {
  Napi::Env env(env_);
  Napi::HandleScope scope(env);
  size_t remaining = 0;
  for (int round = 0; round < kRoundsPerWakeup && !closing_ && metaData_ != nullptr; round++) {
    taken_.clear();
    remaining = recv_->take(&taken_, batch_);
    if (taken_.empty()) break;
    for (size_t i = 0; i < taken_.size(); i++) {
      const RecvThread::Item &item = taken_[i];
      const bool fits = item.data.size() <= kSlot;
      if (fits) std::memcpy(arenaData_ + i * kSlot, item.data.data(), item.data.size());
      metaData_[4 * i] = static_cast<uint32_t>(i * kSlot);
      metaData_[4 * i + 1] = fits ? static_cast<uint32_t>(item.data.size()) : 0;
      metaData_[4 * i + 2] = item.ip;
      metaData_[4 * i + 3] = static_cast<uint32_t>(item.port) | (item.plain ? 0x10000u : 0u);
    }
    const bool ok = deliver(static_cast<unsigned>(taken_.size()));
    if (recv_) recv_->delivered(taken_);
    if (!ok || remaining == 0) break;
  }
  taken_.clear();
  if (remaining > 0 && !closing_) uv_async_send(&wake_);
}

// route(ip, port, conn): the receive thread takes the application data of the session at
// ip:port (host order) and forwards it with conn's forwarder settings. false when the endpoint is
// not threaded or conn is not an open, handed-off connection with forwarding on.
Napi::Value Endpoint::Route(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const double ip = argNumber(info, 0), port = argNumber(info, 1);
  if (!isUint32(ip) || !isPort(port) || info.Length() < 3) throwCode(env, "EDTLS_USAGE", "route(ip, port, conn)");
  Conn *conn = Conn::FromValue(env, info[2]);
  if (conn == nullptr) throwCode(env, "EDTLS_USAGE", "route(ip, port, conn): conn is not a Conn");
  if (!recv_ || closing_) return Napi::Boolean::New(env, false);
  std::weak_ptr<RecordLayer> rl;
  TunForwarder forward;
  if (!conn->recvPath(&rl, &forward)) return Napi::Boolean::New(env, false);
  recv_->route(static_cast<uint32_t>(ip), static_cast<uint16_t>(port), std::move(rl), forward);
  return Napi::Boolean::New(env, true);
}

// unroute(ip, port): the route's final counters (see routeValues), undefined when there was none.
Napi::Value Endpoint::Unroute(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const double ip = argNumber(info, 0), port = argNumber(info, 1);
  if (!isUint32(ip) || !isPort(port)) throwCode(env, "EDTLS_USAGE", "unroute(ip, port)");
  RecvThread::RouteCounters c;
  if (!recv_ || !recv_->unroute(static_cast<uint32_t>(ip), static_cast<uint16_t>(port), &c)) return env.Undefined();
  return routeArray(env, c);
}

// routeStats(ip, port): one route's counters (or undefined); routeStats(): a Float64Array of
// [ip * 65536 + port, ...counters] per route (in bulk).
Napi::Value Endpoint::RouteStats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() >= 2) {
    const double ip = argNumber(info, 0), port = argNumber(info, 1);
    if (!isUint32(ip) || !isPort(port)) throwCode(env, "EDTLS_USAGE", "routeStats(ip?, port?)");
    RecvThread::RouteCounters c;
    if (!recv_ || !recv_->routeCounters(static_cast<uint32_t>(ip), static_cast<uint16_t>(port), &c))
      return env.Undefined();
    return routeArray(env, c);
  }
  const auto all = recv_ ? recv_->allRoutes() : std::vector<std::pair<uint64_t, RecvThread::RouteCounters>>();
  Napi::Float64Array a = Napi::Float64Array::New(env, all.size() * (kRouteValues + 1));
  double *out = a.Data();
  for (const auto &[key, c] : all) {
    *out++ = static_cast<double>(key >> 16) * 65536.0 + static_cast<double>(key & 0xffff);
    routeValues(c, out);
    out += kRouteValues;
  }
  return a;
}

// threadStats(): the receive thread's counters, undefined when the endpoint is not threaded.
Napi::Value Endpoint::ThreadStats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!recv_) return env.Undefined();
  const RecvThread::Counters c = recv_->counters();
  Napi::Object o = Napi::Object::New(env);
  o.Set("wakeups", c.wakeups);
  o.Set("datagrams", c.datagrams);
  o.Set("opened", c.opened);
  o.Set("queued", c.queued);
  o.Set("queueDropped", c.queueDropped);
  o.Set("plainToJs", c.plainToJs);
  o.Set("expired", c.expired);
  o.Set("routes", static_cast<double>(recv_->routes()));
  o.Set("reading", recv_->running());
  const ThreadPriority prio = recv_->priority();
  o.Set("tid", static_cast<double>(recv_->tid()));
  o.Set("nice", prio.nice);
  o.Set("priorityRaised", prio.raised);
  if (recv_->readErrno() != 0) o.Set("readError", std::strerror(recv_->readErrno()));
  return o;
}

Napi::Value OpenUdp(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsNumber())
    throwCode(env, "EDTLS_USAGE", "openUdp(address, port, bufferBytes)");
  sockaddr_storage ss{};
  socklen_t len = 0;
  std::string host = info[0].As<Napi::String>().Utf8Value();
  int port = info[1].As<Napi::Number>().Int32Value();
  if (!parseAddress(host, port, &ss, &len, nullptr)) throwCode(env, "EDTLS_ADDRESS", "not an IP address: " + host);
  int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throwCode(env, "EDTLS_SOCKET", std::string("socket: ") + std::strerror(errno));
  int bufBytes = info[2].As<Napi::Number>().Int32Value();
  if (bufBytes > 0) {
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufBytes, sizeof bufBytes);
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufBytes, sizeof bufBytes);
  }
  if (bind(fd, reinterpret_cast<sockaddr *>(&ss), len) != 0) {
    int e = errno;
    close(fd);
    const char *code = e == EADDRINUSE      ? "EADDRINUSE"
                       : e == EADDRNOTAVAIL ? "EADDRNOTAVAIL"
                       : e == EACCES        ? "EACCES"
                                            : "EDTLS_SOCKET";
    throwCode(env, code, "bind " + host + ":" + std::to_string(port) + ": " + std::strerror(e));
  }
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  int boundPort = port;
  if (getsockname(fd, reinterpret_cast<sockaddr *>(&bound), &blen) == 0) {
    boundPort = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6 *>(&bound)->sin6_port)
                                            : ntohs(reinterpret_cast<sockaddr_in *>(&bound)->sin_port);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("fd", fd);
  o.Set("port", boundPort);
  return o;
}

Napi::Value CloseFd(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throwCode(info.Env(), "EDTLS_USAGE", "closeFd(fd)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd >= 0) close(fd);
  return info.Env().Undefined();
}

}  // namespace seng_dtls
