// The UDP endpoint (see endpoint.h).
#include "endpoint.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "address.h"
#include "common.h"
#include "tun_writer.h"

namespace seng_dtls {

namespace {

constexpr size_t kSlot = kMaxPlain + 2048;  // the largest DTLS record plus headers
constexpr int kRoundsPerWakeup = 8;         // then yield to the loop (level-triggered: it comes back)

}  // namespace

Napi::Function Endpoint::Init(Napi::Env env) {
  return DefineClass(env, "Endpoint",
                     {
                         InstanceMethod<&Endpoint::Start>("start"),
                         InstanceMethod<&Endpoint::Close>("close"),
                         InstanceAccessor<&Endpoint::Arena>("arena"),
                         InstanceAccessor<&Endpoint::Meta>("meta"),
                         InstanceAccessor<&Endpoint::Fd>("fd"),
                     });
}

// new Endpoint(fd, onBatch, batch?): takes ownership of fd (an IPv4 UDP socket, non-blocking);
// batch (1..32, default 32) datagrams are read per recvmmsg call (a client needs few).
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
    uv_poll_stop(&poll_);
    uv_close(reinterpret_cast<uv_handle_t *>(&poll_), OnClosed);
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
    // One recvmmsg batch: the offload TUN writers coalesce what its records forwarded.
    TunWriter::beginBatch();
    try {
      onBatch_.MakeCallback(env.Global(), {Napi::Number::New(env, n)}, *async_);
      TunWriter::endBatch();
    } catch (const Napi::Error &e) {
      TunWriter::endBatch();
      // An exception from the batch handler is an uncaught exception of the process, like one
      // thrown by a node event listener.
      napi_fatal_exception(env_, e.Value());
      return;
    }
    if (static_cast<unsigned>(n) < batch_) return;
  }
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
